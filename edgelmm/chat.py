"""Chat prompts: the one place that renders a conversation with a model's chat template and knows its
image placeholder and the strings that end an answer.

The template is rendered with Jinja2 configured as transformers' `apply_chat_template` is, so training
data, evaluation, export and both runtime backends write exactly the same text. A prompt for the
runtime is a list of pieces: text, and one `IMAGE` marker where the image embeddings enter. A
`ChatFormat` comes from a bundle's manifest (`from_manifest`) or from a checkpoint's tokenizer
(`from_tokenizer`), and gives the manifest its prompt (`to_manifest`). Torch-free.

What a user wrote never becomes control tokens: the runtime renders a conversation with each question
and answer bracketed by two private-use characters (`render_marked`), so that `pieces` can tell the
template's own text, whose `<|end|>` or `<image>` are the model's control tokens, from user text
(`UserText`), which the runtime tokenizes as plain text. The brackets never reach a tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from edgelmm.bundle_format import BundleError, Prompt

IMAGE = object()  # the marker for the image embeddings inside a list of prompt pieces
USER_OPEN, USER_CLOSE = "\ue000", "\ue001"  # bracket user text in a rendered prompt (Unicode private use)
IMAGE_PLACEHOLDER = "<image>"  # the image's token in edgelmm's tokenizers and chat templates
END_OF_TEXT = "<|endoftext|>"  # Phi-3's end of a document: also ends an answer where a vocabulary has it


class UserText(str):
    """A piece of prompt a user wrote (a question, or an answer in the history): plain text only."""


def mark_user(text: str) -> str:
    """`text` bracketed as user text (brackets already inside it are dropped: they mean nothing there)."""
    return USER_OPEN + text.replace(USER_OPEN, "").replace(USER_CLOSE, "") + USER_CLOSE


def stop_strings(tokenizer, generation_config=None) -> list[str]:
    """The texts that end an answer: the generation config's EOS tokens, the tokenizer's EOS, and
    `<|endoftext|>` where the vocabulary has it (llama.cpp ends there too)."""
    eos = getattr(generation_config, "eos_token_id", None)
    ids = [*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id]
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)  # None, or the unknown token's id, if absent
    if end_of_text is not None and end_of_text != tokenizer.unk_token_id:
        ids.append(end_of_text)
    return sorted({tokenizer.convert_ids_to_tokens(i) for i in ids if i is not None})


@dataclass
class ChatFormat:
    """How one model words a conversation."""

    template: str
    image_placeholder: str = IMAGE_PLACEHOLDER
    bos: str | None = None
    system_prompt: str | None = None
    stop: list[str] = field(default_factory=list)
    eos: str | None = None
    # Whether the template reads each message's content as parts ({"type": "image"}, {"type": "text",
    # "text": ...}), as llava-hf's processor templates do, instead of one string; `checked` finds out.
    content_parts: bool = False

    @classmethod
    def from_manifest(cls, prompt) -> ChatFormat:
        """From a bundle's `bundle_format.Prompt`."""
        return cls(template=prompt.chat_template, image_placeholder=prompt.image_placeholder, bos=prompt.bos,
                   system_prompt=prompt.system_prompt, stop=list(prompt.stop), eos=prompt.eos).checked()

    @classmethod
    def from_tokenizer(cls, tokenizer, generation_config=None) -> ChatFormat:
        """From a checkpoint's tokenizer (with `<image>` and a chat template, as edgelmm's are)."""
        return cls(template=tokenizer.chat_template, bos=tokenizer.bos_token, eos=tokenizer.eos_token,
                   stop=stop_strings(tokenizer, generation_config)).checked()

    def checked(self) -> ChatFormat:
        """This format, once its template has rendered a conversation of two turns with the image
        placeholder once and every question and answer kept (content as one string, else as parts);
        otherwise a BundleError."""
        problems = []
        for parts in (self.content_parts, not self.content_parts):
            candidate = dataclasses.replace(self, content_parts=parts)
            problems.append(candidate._problem())
            if problems[-1] is None:
                return candidate
        raise BundleError(problems[0])

    def _problem(self) -> str | None:
        turns = [("q1", "a1"), ("q2", None)]
        try:
            pieces = self.pieces(self.render_marked(turns))
        except Exception as e:  # the template is data: whatever Jinja2 raises for it is the bundle's fault
            return f"the chat template cannot render a conversation: {e}"
        if pieces.count(IMAGE) != 1:
            return (f"the chat template puts the image placeholder {self.image_placeholder!r} in a "
                    f"conversation {pieces.count(IMAGE)} times instead of once")
        if [p for p in pieces if isinstance(p, UserText)] != ["q1", "a1", "q2"]:
            return "the chat template drops or changes the questions and answers it is given"
        return None

    def to_manifest(self) -> Prompt:
        """The bundle manifest's `prompt`."""
        return Prompt(chat_template=self.template, image_placeholder=self.image_placeholder, bos=self.bos,
                      stop=list(self.stop), system_prompt=self.system_prompt, eos=self.eos)

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """Messages ({"role", "content"}) as the template writes them (as `apply_chat_template` does)."""
        return _compiled(self.template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                               bos_token=self.bos or "", eos_token=self.eos or "")

    def render_text(self, turns: list[tuple[str, str | None]], with_image: bool = True) -> str:
        """The text of a conversation about one image: (question, answer) turns, the last answer None
        (the text then ends where the model starts answering). The image precedes the first question."""
        return self._render_turns(turns, with_image, lambda text: text)

    def render_marked(self, turns: list[tuple[str, str | None]]) -> str:
        """`render_text` with every question and answer marked as user text, for `pieces`."""
        return self._render_turns(turns, True, mark_user)

    def _render_turns(self, turns, with_image: bool, mark) -> str:
        messages = [self._message("system", self.system_prompt)] if self.system_prompt else []
        for k, (question, answer) in enumerate(turns):
            messages.append(self._message("user", mark(question), image=k == 0 and with_image))
            if answer is not None:
                messages.append(self._message("assistant", mark(answer)))
        return self.render(messages, add_generation_prompt=turns[-1][1] is None)

    def _message(self, role: str, text: str, image: bool = False) -> dict:
        if self.content_parts:  # the template writes the image's placeholder where it wants it
            return {"role": role, "content": [{"type": "image"}] * image + [{"type": "text", "text": text}]}
        return {"role": role, "content": f"{self.image_placeholder}\n{text}" if image else text}

    def pieces(self, marked: str) -> list:
        """The pieces of a text from `render_marked` (or a tail of one): template text (str), `IMAGE`
        where the template put the placeholder, and `UserText`."""
        out, user = [], False
        for part in re.split(f"([{USER_OPEN}{USER_CLOSE}])", marked):
            if part in (USER_OPEN, USER_CLOSE):
                user = part == USER_OPEN
            elif user:
                out.extend([UserText(part)] if part else [])
            elif part:
                for k, text in enumerate(part.split(self.image_placeholder)):
                    out.extend([IMAGE] if k else [])
                    out.extend([text] if text else [])
        return out


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
