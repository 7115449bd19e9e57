"""OpenAI's chat API: `POST /v1/chat/completions` (plain, or streamed as server-sent events in the
chunk format) and `GET /v1/models`.

Content parts: `text`, and `image_url` as a data URI (an `http(s)` URL is refused: the server is
offline by design). Options: `max_tokens` (or `max_completion_tokens`), `temperature` (default: the
bundle's, 0 = greedy), `top_p`, `seed`, `stop`, `n` = 1, `stream`, `stream_options.include_usage`.
edgelmm's extras: `image_tokens` (read only that many image tokens) and `ttft_budget` (seconds to the
first word), and each response's `edgelmm` object with the answer's timings (`time_to_first_token`,
`image_cached`, `reused_tokens`, `restored_tokens`, ...).
"""

from __future__ import annotations

import json
import time
import uuid

from edgelmm.server.messages import RequestError, build_job, image_from_url


def _text_and_images(content, where: str) -> tuple[str, list[bytes]]:
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise RequestError(f"{where} must be text or a list of content parts", where)
    texts, images = [], []
    for k, part in enumerate(content):
        at = f"{where}[{k}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            images.append(image_from_url(url.get("url") if isinstance(url, dict) else url, f"{at}.image_url"))
        else:
            raise RequestError(f"{at} must be a text or image_url part", at)
    return "\n".join(texts), images


def parse_request(body: dict, defaults) -> tuple:
    """(Job, stream, include_usage) from a chat completion request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    parsed = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{k}] must be an object", f"messages[{k}]")
        parsed.append((message.get("role"), *_text_and_images(message.get("content"), f"messages[{k}].content")))
    if body.get("n", 1) != 1:
        raise RequestError("only n = 1 is supported", "n")
    stop = body.get("stop") or []
    job = build_job(parsed, max_tokens=body.get("max_completion_tokens", body.get("max_tokens", defaults.max_tokens)),
                    temperature=_or(body.get("temperature"), defaults.temperature), top_p=_or(body.get("top_p"), 1.0),
                    seed=_or(body.get("seed"), 0), stop=[stop] if isinstance(stop, str) else stop,
                    image_tokens=body.get("image_tokens"), ttft_budget=body.get("ttft_budget"))
    options = body.get("stream_options") or {}
    return job, bool(body.get("stream")), bool(isinstance(options, dict) and options.get("include_usage"))


def _or(value, default):
    return default if value is None else value


class Completion:
    """The response objects of one completion."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def usage(result) -> dict:
        return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens}

    def whole(self, result) -> dict:
        return {**self._head("chat.completion"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.finish_reason}],
                "usage": self.usage(result), "edgelmm": result.timings}

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        body = {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def usage_chunk(self, result) -> str:
        body = {**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage(result)}
        return f"data: {json.dumps(body)}\n\n"


def models_list(service) -> dict:
    return {"object": "list", "data": [{"id": service.name, "object": "model", "created": service.created,
                                        "owned_by": "edgelmm"}]}
