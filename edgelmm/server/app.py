"""The HTTP side of `edgelmm serve`: routes, errors, limits, the API key and the access log.

Starlette and uvicorn: a small, well-kept ASGI pair with no further dependencies worth naming
(FastAPI would add pydantic for request models that are a few dict lookups here; server-sent events
are three lines of text, so no SSE package either). Errors are OpenAI's error object on /v1 routes and
Ollama's `{"error": ...}` on /api routes. The access log has one line per request (method, path,
status, bytes, milliseconds) and never a question, an answer or an image.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgelmm import __version__
from edgelmm.bundle_format import Generation
from edgelmm.errors import UserError
from edgelmm.server import ollama_api, openai_api
from edgelmm.server.messages import RequestError
from edgelmm.server.service import Busy, Result, Service, Unavailable

log = logging.getLogger("edgelmm.server")
API_KEY_ENV = "EDGELMM_API_KEY"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 32 << 20  # a 20 MB photo, base64-encoded, fits
    api_key: str | None = None


class TooLarge(Exception):
    pass


def _error(request: Request, status: int, message: str, kind: str = "invalid_request_error",
           param: str | None = None, headers: dict | None = None) -> JSONResponse:
    if request.url.path.startswith("/api/"):
        body = {"error": message}
    else:
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _failure(request: Request, e: Exception) -> JSONResponse:
    if isinstance(e, Busy):
        return _error(request, 429, str(e), "rate_limit_error", headers={"Retry-After": str(e.retry_after)})
    if isinstance(e, Unavailable):
        return _error(request, 503, str(e), "service_unavailable")
    if isinstance(e, TooLarge):
        return _error(request, 413, str(e))
    if isinstance(e, UserError):
        return _error(request, 400, str(e), param=getattr(e, "param", None))
    raise e


async def _json_body(request: Request, limit: int) -> dict:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is over {limit} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(f"the request body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


async def _result(answer) -> Result:
    async for item in answer:
        if isinstance(item, Result):
            return item
    raise RuntimeError("the answer ended without its result")


async def _respond(request: Request, answer, whole, stream=None, media_type: str = "") -> Response:
    """The answer as one JSON object (`whole(result)`), or streamed: `stream(items)` turns the text
    chunks and the final `Result` into the body's parts. A client that leaves stops the generation."""
    if stream is None:
        task = asyncio.ensure_future(_result(answer))
        while not (await asyncio.wait({task}, timeout=0.2))[0]:
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await answer.aclose()
                return Response(status_code=499)
        return JSONResponse(whole(task.result()))
    first = await answer.__anext__()  # errors (busy, bad request) surface before a stream starts

    async def items():
        yield first
        async for item in answer:
            yield item

    async def body():
        try:
            async for part in stream(items()):
                yield part
        finally:
            await answer.aclose()  # a client gone mid-stream frees the model here
    return StreamingResponse(body(), media_type=media_type, headers={"Cache-Control": "no-cache"})


def make_app(service: Service, limits: Limits = Limits()) -> Starlette:
    defaults = None

    def generation_defaults():
        nonlocal defaults
        if defaults is None:  # the bundle's own defaults, once the model is loaded
            manifest = getattr(service.model.backend, "manifest", None)
            defaults = manifest.generation if manifest else Generation()
        return defaults

    async def guarded(request: Request, handler):
        if limits.api_key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {limits.api_key}".encode()):
                return _error(request, 401, "a valid API key is needed (Authorization: Bearer ...)",
                              "authentication_error")
        try:
            if service.model is None:
                raise Unavailable(service.load_error or "the model is still loading")
            return await handler(request)
        except (UserError, TooLarge) as e:
            return _failure(request, e)

    async def chat_completions(request: Request) -> Response:
        job, stream, include_usage = openai_api.parse_request(await _json_body(request, limits.max_body_bytes),
                                                              generation_defaults())
        completion = openai_api.Completion(service.name)

        async def events(items):
            yield completion.chunk({"role": "assistant", "content": ""})
            async for item in items:
                if not isinstance(item, Result):
                    yield completion.chunk({"content": item})
                    continue
                yield completion.chunk({}, item.finish_reason, edgelmm=item.timings)
                if include_usage:
                    yield completion.usage_chunk(item)
                yield "data: [DONE]\n\n"
        return await _respond(request, service.answer(job), completion.whole, events if stream else None,
                              "text/event-stream")

    async def ollama(request: Request, chat: bool) -> Response:
        body = await _json_body(request, limits.max_body_bytes)
        parse = ollama_api.parse_chat if chat else ollama_api.parse_generate
        job, stream = parse(body, generation_defaults())
        reply = ollama_api.Reply(service.name, chat)

        async def lines(items):
            async for item in items:
                yield json.dumps(reply.final(item), ensure_ascii=False) + "\n" if isinstance(item, Result) \
                    else reply.part(item)
        return await _respond(request, service.answer(job), lambda result: reply.final(result, result.text),
                              lines if stream else None, "application/x-ndjson")

    async def health(request: Request) -> Response:
        if service.ready:
            return JSONResponse({"status": "ok", "model": service.name})
        status = "shutting down" if service.closing else "error" if service.load_error else "loading"
        return JSONResponse({"status": status, "error": service.load_error}, status_code=503)

    def route(path: str, handler, method: str = "POST") -> Route:
        async def endpoint(request: Request) -> Response:
            return await guarded(request, handler)
        return Route(path, endpoint, methods=[method])

    async def chat_route(request):
        return await ollama(request, chat=True)

    async def generate_route(request):
        return await ollama(request, chat=False)

    async def models(request):
        return JSONResponse(openai_api.models_list(service))

    async def tags(request):
        return JSONResponse(ollama_api.tags(service))

    async def version(request):
        return JSONResponse({"version": f"edgelmm-{__version__}"})

    async def metrics(request):
        return JSONResponse(service.stats())

    app = Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        route("/metrics", metrics, "GET"),
        route("/v1/models", models, "GET"),
        route("/v1/chat/completions", chat_completions),
        route("/api/chat", chat_route),
        route("/api/generate", generate_route),
        route("/api/tags", tags, "GET"),
        route("/api/version", version, "GET"),
    ])
    return AccessLog(app)


class AccessLog:
    """One line per request: method, path, status, response bytes, milliseconds. No bodies."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, seen = time.perf_counter(), {"status": 0, "bytes": 0}

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)
        try:
            await self.app(scope, receive, counting_send)
        finally:
            log.info("%s %s %s %d %.0fms", scope["method"], scope["path"], seen["status"] or "-", seen["bytes"],
                     (time.perf_counter() - started) * 1000)
