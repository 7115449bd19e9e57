"""Conversations as APIs send them (a list of role/content messages), turned into a `Job`: the one
image, the system prompt, earlier turns and the question. Shared by the OpenAI and Ollama endpoints.

edgelmm answers questions about one image: a conversation carries exactly one (the same photo sent
again in a later message counts once), which the model sees before the first question wherever it
was attached. Consecutive messages of the same role are joined by a line break.
"""

from __future__ import annotations

import base64
import binascii

from edgelmm.errors import UserError
from edgelmm.server.service import Job

ROLES = ("system", "user", "assistant")


class RequestError(UserError):
    """A request the server cannot take (HTTP 400), naming the field at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def decode_base64(data, where: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise RequestError(f"{where} must be base64 text", where)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where} is not valid base64", where) from None


def image_from_url(url, where: str) -> bytes:
    """The bytes of an image given as a data URI; other URLs are refused (the server is offline)."""
    if not isinstance(url, str):
        raise RequestError(f"{where} must be a data URI", where)
    if url.startswith(("http://", "https://")):
        raise RequestError("the server works offline and fetches no URLs: send the image inline as a data URI "
                           "(data:image/jpeg;base64,...)", where)
    head, comma, data = url.partition(",")
    if not url.startswith("data:") or not comma or not head.endswith(";base64"):
        raise RequestError(f"{where} must be a base64 data URI (data:image/...;base64,...)", where)
    return decode_base64(data, where)


def build_job(messages: list[tuple[str, str, list[bytes]]], where: str = "messages", **options) -> Job:
    """A `Job` from (role, text, images) messages; `options` are the Job's generation fields."""
    system, turns, images = [], [], []
    for k, (role, text, attached) in enumerate(messages):
        if role not in ROLES:
            raise RequestError(f"{where}[{k}].role must be one of {', '.join(ROLES)}, not {role!r}", f"{where}[{k}].role")
        images.extend(image for image in attached if image not in images)
        if role == "system":
            system.append(text)
        elif turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n" + text)
        else:
            turns.append((role, text))
    if not turns or turns[-1][0] != "user":
        raise RequestError(f"the last message of {where} must be the user's question", where)
    if turns[0][0] != "user":
        raise RequestError(f"{where} must start with the user (after any system message)", where)
    if len(images) != 1:
        raise RequestError(f"edgelmm answers questions about one image: the conversation has {len(images)}", where)
    history = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns) - 1, 2)]
    return Job(image=images[0], question=turns[-1][1], history=history,
               system="\n".join(system) if system else None, **options)
