"""An Ollama Modelfile for a bundle (`edgelmm export ... --ollama`): `ollama create NAME -f Modelfile`
in the bundle folder then serves the same model through Ollama.

The Modelfile names the LM GGUF and the mmproj (two FROM lines), the stop strings, the system prompt and
the generation defaults, and a TEMPLATE in Go's text/template syntax, as Ollama renders prompts. The
TEMPLATE is derived from the bundle's own chat template by rendering conversations whose contents are
markers and reading off the text the template writes around each message: before the first one (by
its role), between two (by the pair of roles), and after a last user message when an answer follows.
The derived TEMPLATE is then checked against the chat template on longer conversations, with and
without a system message; a template that words turns differently by position (Llama-2's, which folds
the system prompt into the first question) is refused. Ollama inserts the image into the user's message.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgelmm.chat import ChatFormat
from edgelmm.errors import ConfigError

MODELFILE = "Modelfile"


def _marker(k: int) -> str:
    return f"\ue010{k}\ue011"  # private-use characters: no template writes them itself


def _render(chat: ChatFormat, roles: list[str], contents: list[str]) -> str:
    return chat.render([{"role": r, "content": c} for r, c in zip(roles, contents)], add_generation_prompt=True)


def _between(chat: ChatFormat, roles: list[str]) -> list[str]:
    """The texts the template writes around the messages of a conversation with these roles."""
    markers = [_marker(k) for k in range(len(roles))]
    text = _render(chat, roles, markers)
    pieces = []
    for m in markers:
        before, found, text = text.partition(m)
        if not found or m in text:
            raise ConfigError("the chat template does not write each message once, as it is given; "
                              "it cannot be written as an Ollama TEMPLATE")
        pieces.append(before)
    return [*pieces, text]


class TurnLayout:
    """The text around messages: `head[role]` before a first message, `joint[(a, b)]` between a message
    of role a and one of role b, `tail` after a last user message (the answer's opening)."""

    def __init__(self, chat: ChatFormat) -> None:
        user_first = _between(chat, ["user", "assistant", "user"])
        with_system = _between(chat, ["system", "user"])
        self.head = {"user": user_first[0], "system": with_system[0]}
        self.joint = {("user", "assistant"): user_first[1], ("assistant", "user"): user_first[2],
                      ("system", "user"): with_system[1]}
        self.tail = user_first[3]

    def render(self, roles: list[str], contents: list[str]) -> str:
        """The prompt this layout writes (as the Go TEMPLATE will), for a conversation ending with a user."""
        out = self.head[roles[0]]
        for k, content in enumerate(contents):
            out += (self.joint[(roles[k - 1], roles[k])] if k else "") + content
        return out + self.tail


def _go_string(text: str) -> str:
    # A JSON string is a valid Go string literal (\n, \", \\, \uXXXX), and ends with a quote that a space
    # keeps from meeting another: the TEMPLATE never holds '"""', which would end it in the Modelfile.
    return json.dumps(text, ensure_ascii=False)


def go_template(chat: ChatFormat) -> str:
    """The chat template of `chat` in Go's text/template syntax, over Ollama's `.Messages`; a
    ConfigError when the chat template words turns in a way no such template can."""
    layout = TurnLayout(chat)
    probes = [["user", "assistant", "user", "assistant", "user"],
              ["system", "user", "assistant", "user"], ["system", "user"], ["user"]]
    for roles in probes:
        contents = [f"{role} {k} \"text\"\n" for k, role in enumerate(roles)]
        if layout.render(roles, contents) != _render(chat, roles, contents):
            raise ConfigError("the chat template words turns differently by their position in the "
                              "conversation; it cannot be written as an Ollama TEMPLATE")

    def literal(text: str) -> str:
        return f"{{{{ {_go_string(text)} }}}}" if text else ""

    heads = "".join(f"{{{{- {'if' if k == 0 else 'else if'} eq .Role \"{role}\" }}}}{literal(text)}"
                    for k, (role, text) in enumerate(layout.head.items()))
    joints = "".join(f"{{{{- else if and (eq $prev \"{a}\") (eq .Role \"{b}\") }}}}{literal(text)}"
                     for (a, b), text in layout.joint.items())
    return ("{{- $prev := \"\" }}"
            "{{- range .Messages }}"
            f"{{{{- if eq $prev \"\" }}}}{heads}{{{{- end }}}}{joints}{{{{- end }}}}"
            "{{- .Content }}{{- $prev = .Role }}"
            "{{- end }}"
            f"{{{{- if eq $prev \"user\" }}}}{literal(layout.tail)}{{{{- end }}}}")


def _quoted(value: str, what: str) -> str:
    if '"' in value or "\n" in value:
        raise ConfigError(f"{what} {value!r} cannot be written in a Modelfile (quotes or line breaks)")
    return f'"{value}"'


def modelfile(chat: ChatFormat, lm_file: str, mmproj_file: str, max_tokens: int, temperature: float) -> str:
    """The Modelfile text for a bundle's files and prompt."""
    lines = ["# Ollama Modelfile written by edgelmm: run `ollama create NAME -f Modelfile` in this folder.",
             f"FROM ./{lm_file}", f"FROM ./{mmproj_file}", f'TEMPLATE """{go_template(chat)}"""']
    if chat.system_prompt:
        if '"""' in chat.system_prompt:
            raise ConfigError('the system prompt holds """, which would end it in a Modelfile')
        lines.append(f'SYSTEM """{chat.system_prompt}"""')
    lines += [f"PARAMETER stop {_quoted(stop, 'stop string')}" for stop in chat.stop]
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER num_predict {max_tokens}"]
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, chat: ChatFormat, lm_file: str, mmproj_file: str, max_tokens: int,
                    temperature: float) -> str:
    """Write the Modelfile into `folder`; returns its name."""
    (folder / MODELFILE).write_text(modelfile(chat, lm_file, mmproj_file, max_tokens, temperature))
    return MODELFILE
