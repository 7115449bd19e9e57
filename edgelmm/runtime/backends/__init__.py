"""Backends: what runs the vision graph and the language model behind `edgelmm.load`.

One registry, one file per backend. A backend holds one sequence of positions (the KV cache) and
offers the small set of operations `runtime.model` composes into questions and answers:

    chat: ChatFormat, image_spec: ImageSpec, n_ctx: int, size_on_disk: int
    encode_image(pixel_values (3, H, W)) -> embeddings (N, D)
    tokenize(text) -> token ids (special tokens parsed, nothing added)
    position -> positions decoded so far;  truncate(n) -> forget positions from n on
    reserve(n) -> make room for n positions where the context can grow (n_ctx tells what it holds)
    feed_tokens(ids), feed_embeddings((n, D))
    sampler(temperature, seed) -> a callable giving the next token after the last position
    is_end(token) -> whether a token ends the answer;  token_bytes(token) -> its text as UTF-8 bytes
"""

from __future__ import annotations

import importlib

from edgelmm.errors import UnknownNameError

BACKENDS = {
    "llamacpp": "edgelmm.runtime.backends.llamacpp:LlamaCppBackend",  # ONNX Runtime + llama.cpp, torch-free
    "torch": "edgelmm.runtime.backends.torch:TorchBackend",  # the transformers checkpoint, the reference
}
DEFAULT_BACKEND = "llamacpp"


def backend_class(name: str):
    """The backend class registered as `name` ("auto" picks the default)."""
    name = DEFAULT_BACKEND if name == "auto" else name
    if name not in BACKENDS:
        raise UnknownNameError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
