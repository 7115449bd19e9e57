"""`edgelmm serve`: the model as a local HTTP server (OpenAI's and Ollama's APIs)."""

from __future__ import annotations

import click

from edgelmm import options
from edgelmm.cli.app import Checked, app


@app.command()
@click.option("--model", "-m", "model_path", type=click.Path(),
              help="Bundle folder [default: $EDGELMM_MODEL, else the built-in demo model].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (only this machine by default).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port (11434 for apps that expect Ollama's).")
@click.option("--max-queue", default=4, show_default=True, type=click.IntRange(0, 1000),
              help="Requests that may wait while one is answered; more get HTTP 429.")
@click.option("--threads", type=Checked(int, options.check_threads), help="CPU threads [default: one per core].")
@click.option("--kv-cache-mb", default=512.0, show_default=True, type=click.FloatRange(0),
              help="Memory for saved KV caches of earlier conversations (0: none).")
@click.option("--max-body-mb", default=32.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Largest request body; larger ones get HTTP 413.")
@click.option("--name", help="Model name in the APIs [default: the bundle folder's name].")
def serve(model_path, host, port, max_queue, threads, kv_cache_mb, max_body_mb, name) -> None:
    """Serve a bundle over HTTP: OpenAI's /v1/chat/completions and Ollama's /api/chat and /api/generate.

    An API key, when wanted, comes from $EDGELMM_API_KEY (never from the command line, where other users
    of the machine can read it). Stop with Ctrl-C or SIGTERM: the answer in flight finishes.
    """
    from edgelmm.server import serve as run

    run(model_path, host=host, port=port, max_queue=max_queue, n_threads=threads, kv_cache_mb=kv_cache_mb,
        max_body_mb=max_body_mb, name=name, announce=lambda line: click.echo(line, err=True))
