"""Chat prompts as the runtime sees them: the model's chat template rendered with Jinja2, cut where
the image goes.

A prompt is a list of pieces: text, and one `IMAGE` marker where the image embeddings enter. The
template, placeholder and system prompt come from the bundle manifest (or the checkpoint's tokenizer),
so the runtime writes exactly the prompts the model was trained on. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache

IMAGE = object()  # the marker for the image embeddings inside a list of prompt pieces


@dataclass
class ChatFormat:
    """How one model words a conversation."""

    template: str
    image_placeholder: str = "<image>"
    bos: str | None = None
    system_prompt: str | None = None
    stop: list[str] = field(default_factory=list)

    @classmethod
    def from_manifest(cls, prompt) -> ChatFormat:
        """From a bundle's `bundle_format.Prompt`."""
        return cls(template=prompt.chat_template, image_placeholder=prompt.image_placeholder, bos=prompt.bos,
                   system_prompt=prompt.system_prompt, stop=list(prompt.stop))

    def render_text(self, turns: list[tuple[str, str | None]]) -> str:
        """The text of a conversation about one image: (question, answer) turns, the last answer None
        (the text then ends where the model starts answering). The image precedes the first question."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for k, (question, answer) in enumerate(turns):
            messages.append({"role": "user", "content": f"{self.image_placeholder}\n{question}" if k == 0 else question})
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
        return _compiled(self.template).render(messages=messages, add_generation_prompt=turns[-1][1] is None,
                                               bos_token=self.bos or "")

    def split(self, text: str) -> list:
        """The pieces of a rendered text: text before the image, `IMAGE`, text after."""
        before, found, after = text.partition(self.image_placeholder)
        if not found:
            raise ValueError(f"the chat template dropped the image placeholder {self.image_placeholder!r}")
        return [p for p in (before, IMAGE, after) if p is IMAGE or p]


def _raise(message: str):
    raise ValueError(f"chat template: {message}")


@lru_cache(maxsize=8)
def _compiled(template: str):
    """The template in a sandbox configured like transformers' `apply_chat_template`, so both render alike."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = _raise
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
    return env.from_string(template)
