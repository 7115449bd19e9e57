"""Ollama's native API, so that apps written for Ollama work unchanged (serve on `--port 11434`, the
port they expect): `POST /api/chat`, `POST /api/generate` (images as base64 in `images`; streamed as
JSON lines unless `"stream": false`, as Ollama does) and `GET /api/tags`.

Options read from `options`: `num_predict`, `temperature`, `top_p`, `seed`, `stop`. Final objects carry
Ollama's counts and durations (nanoseconds) and edgelmm's timings under `edgelmm`.
"""

from __future__ import annotations

import datetime
import json

from edgelmm.server.messages import RequestError, build_job, decode_base64


def _images(value, where: str) -> list[bytes]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(f"{where} must be a list of base64 images", where)
    return [decode_base64(image, f"{where}[{k}]") for k, image in enumerate(value)]


def _options(body: dict, defaults) -> dict:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise RequestError("options must be an object", "options")
    stop = options.get("stop") or []
    num_predict = options.get("num_predict")
    return {"max_tokens": defaults.max_tokens if num_predict in (None, -1, -2) else num_predict,
            "temperature": options.get("temperature", defaults.temperature), "top_p": options.get("top_p", 1.0),
            "seed": options.get("seed", 0), "stop": [stop] if isinstance(stop, str) else stop}


def parse_chat(body: dict, defaults):
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    parsed = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content", ""), str):
            raise RequestError(f"messages[{k}] must be an object with text content", f"messages[{k}]")
        parsed.append((m.get("role"), m.get("content", ""), _images(m.get("images"), f"messages[{k}].images")))
    return build_job(parsed, **_options(body, defaults)), body.get("stream", True) is not False


def parse_generate(body: dict, defaults):
    prompt, system = body.get("prompt"), body.get("system")
    if not isinstance(prompt, str):
        raise RequestError("prompt must be text", "prompt")
    if system is not None and not isinstance(system, str):
        raise RequestError("system must be text", "system")
    messages = [("system", system, [])] if system else []
    messages.append(("user", prompt, _images(body.get("images"), "images")))
    return build_job(messages, where="prompt", **_options(body, defaults)), body.get("stream", True) is not False


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class Reply:
    """Ollama's response objects for /api/chat (`chat`) or /api/generate."""

    def __init__(self, model: str, chat: bool) -> None:
        self.model, self.chat = model, chat

    def _text(self, text: str) -> dict:
        return {"message": {"role": "assistant", "content": text}} if self.chat else {"response": text}

    def part(self, text: str) -> str:
        return json.dumps({"model": self.model, "created_at": _now(), **self._text(text), "done": False},
                          ensure_ascii=False) + "\n"

    def final(self, result, text: str = "") -> dict:
        t = result.timings
        ns = 1_000_000_000
        return {"model": self.model, "created_at": _now(), **self._text(text), "done": True,
                "done_reason": result.finish_reason,
                "total_duration": int((t["queue_wait"] + t["time_to_first_token"] + t["decode_seconds"]) * ns),
                "load_duration": 0, "prompt_eval_count": result.prompt_tokens,
                "prompt_eval_duration": int(t["time_to_first_token"] * ns),
                "eval_count": result.completion_tokens, "eval_duration": int(t["decode_seconds"] * ns),
                "edgelmm": t}


def tags(service) -> dict:
    manifest = getattr(service.model.backend, "manifest", None) if service.model is not None else None
    details = {"format": "gguf", "family": manifest.lm.architecture, "families": [manifest.lm.architecture],
               "quantization_level": manifest.lm.quant} if manifest else {}
    return {"models": [{"name": f"{service.name}:latest", "model": f"{service.name}:latest",
                        "modified_at": datetime.datetime.fromtimestamp(service.created, datetime.timezone.utc).isoformat(),
                        "size": manifest.size if manifest else 0, "details": details}]}
