"""`edgelmm serve`: one model behind OpenAI's chat API and Ollama's native API, on this machine.

`service` holds the model, its queue and caches; `messages` turns API conversations into jobs;
`openai_api` and `ollama_api` speak the two protocols; `app` is the HTTP side. Needs the `server`
extra (`pip install 'edgelmm[server]'`): Starlette and uvicorn.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys

from edgelmm.errors import UserError

DEFAULT_HOST, DEFAULT_PORT, OLLAMA_PORT = "127.0.0.1", 8080, 11434


def serve(bundle=None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, max_queue: int = 4,
          n_threads: int | None = None, kv_cache_mb: float = 512, max_body_mb: float = 32,
          name: str | None = None, announce=print) -> None:
    """Serve until SIGINT or SIGTERM: stop admitting, finish the answer in flight, answer waiting
    requests with 503, exit. The API key, if any, comes from $EDGELMM_API_KEY."""
    try:
        import uvicorn

        from edgelmm.server.app import API_KEY_ENV, Limits, make_app
        from edgelmm.server.service import Service
    except ImportError as e:
        raise UserError(f"the server needs its extra: pip install 'edgelmm[server]' ({e.name} is missing)") from None

    service = Service(bundle, name=name, max_queue=max_queue, n_threads=n_threads, kv_cache_mb=kv_cache_mb)
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), api_key=os.environ.get(API_KEY_ENV) or None)
    listener = _listen(host, port)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("edgelmm.server").setLevel(logging.INFO)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            service.shutdown()  # waiting requests get 503; the one running finishes
            super().handle_exit(sig, frame)

    config = uvicorn.Config(make_app(service, limits), log_level="warning", access_log=False, lifespan="off")
    loading = service.start_loading()
    bound = listener.getsockname()
    announce(f"edgelmm serve: {service.name} on http://{bound[0]}:{bound[1]} "
             f"(OpenAI /v1, Ollama /api; API key {'required' if limits.api_key else 'off'})")
    # uvicorn raises the signal that stopped it again once it has shut down, to end the process with
    # it; by then the shutdown is complete, so that second SIGTERM or SIGINT is let pass: exit code 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        Server(config).run(sockets=[listener])
    finally:
        service.shutdown()
        loading.cancel()
        service.close()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # The protocol named (IPPROTO_TCP), not left 0: asyncio turns Nagle's algorithm off only on sockets
    # that say they are TCP, and with it on every small response waits 40 ms for a delayed ACK.
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
