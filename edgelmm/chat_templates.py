"""Chat templates by name, for language models whose files carry none (`--template NAME`).

Each is a Jinja2 chat template as transformers writes them (messages with string content) and the
tokens that close its turns, which end an answer beside the model's own EOS. They word a conversation
as the model families named here were trained to read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgelmm.errors import UserError
from edgelmm.fsutil import read_small_text


@dataclass(frozen=True)
class NamedTemplate:
    template: str
    stop: tuple[str, ...]


def _turns(open_role: str, close: str, generation: str, roles=("system", "user", "assistant")) -> str:
    """A template whose turns are `open_role` (with {role} in it), the content, `close`."""
    head = open_role.replace("{role}", "' + message['role'] + '")
    return ("{{ bos_token }}{% for message in messages %}"
            f"{{% if message['role'] not in {list(roles)} %}}"
            "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
            f"{{{{ '{head}' + message['content'] + '{close}' }}}}"
            "{% endfor %}"
            f"{{% if add_generation_prompt %}}{{{{ '{generation}' }}}}{{% endif %}}")


TEMPLATES: dict[str, NamedTemplate] = {
    # Phi-3 and Phi-3.5 (and edgelmm's own models)
    "phi3": NamedTemplate(_turns("<|{role}|>\\n", "<|end|>\\n", "<|assistant|>\\n"), ("<|end|>",)),
    # ChatML: Qwen2, Qwen2.5, many fine-tunes
    "chatml": NamedTemplate(_turns("<|im_start|>{role}\\n", "<|im_end|>\\n", "<|im_start|>assistant\\n"),
                            ("<|im_end|>",)),
    # Llama 3 and 3.1
    "llama3": NamedTemplate(_turns("<|start_header_id|>{role}<|end_header_id|>\\n\\n", "<|eot_id|>",
                                   "<|start_header_id|>assistant<|end_header_id|>\\n\\n"), ("<|eot_id|>",)),
    # LLaVA-1.5 (Vicuna v1): "USER: ... ASSISTANT: ..." with EOS after each answer
    "vicuna": NamedTemplate(
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + ' ' }}"
        "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
        "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + eos_token }}"
        "{% else %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}", ()),
}


def template_named(name_or_file: str) -> NamedTemplate:
    """The template called `name_or_file`, or read from that Jinja2 file (no extra stop tokens then)."""
    if name_or_file in TEMPLATES:
        return TEMPLATES[name_or_file]
    path = Path(name_or_file)
    if not path.exists():
        raise UserError(f"--template {name_or_file!r} is neither a template name ({', '.join(TEMPLATES)}) "
                        "nor a file")
    text = read_small_text(path, "template file")
    if not text.strip():
        raise UserError(f"template file {path} is empty")
    return NamedTemplate(text, ())
