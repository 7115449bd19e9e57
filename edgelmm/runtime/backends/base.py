"""What a backend is: the low-level steps `runtime.model` composes into questions and answers.

A backend holds one sequence of positions (the KV cache) of one model. Everything above these steps,
which prompt positions the cache already holds, chat templates, stop strings, streaming and timings,
lives once in `runtime.model`, so a backend only runs a vision graph and a language model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from edgelmm.imaging import ImageSpec
from edgelmm.chat import ChatFormat


@runtime_checkable
class Backend(Protocol):
    """One model opened for answering. Constructed as `Backend(path, *, n_threads, n_ctx, verbose, **options)`."""

    name: str  # the name it is registered under
    chat: ChatFormat  # how the model words a conversation
    image_spec: ImageSpec  # how an image becomes the vision graph's input
    size_on_disk: int  # bytes of the files it reads

    @property
    def n_ctx(self) -> int:
        """Positions the context holds now."""

    @property
    def position(self) -> int:
        """Positions decoded so far."""

    def encode_image(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(3, H, W) float32 pixels -> (N, D) embeddings as the language model reads them, and each
        token's importance (N,), or None where the model has no per-token scores."""

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of `text`, nothing added; with `special`, control tokens' text becomes those tokens,
        without, it is plain text."""

    def truncate(self, n: int) -> None:
        """Forget every position from `n` on."""

    def reserve(self, n_positions: int) -> None:
        """Make room for `n_positions` where the context can grow (`n_ctx` tells what it holds)."""

    def feed_tokens(self, ids: list[int]) -> None:
        """Decode token ids at the next positions."""

    def feed_embeddings(self, embeds: np.ndarray) -> None:
        """Decode (n, D) embeddings at the next positions."""

    def sampler(self, temperature: float, seed: int, top_p: float = 1.0) -> Callable[[], int]:
        """A callable giving the next token after the last decoded position."""

    def is_end(self, token: int) -> bool:
        """Whether `token` ends an answer."""

    def token_bytes(self, token: int) -> bytes:
        """A token's text as UTF-8 bytes."""

    def info(self) -> dict:
        """What was opened and how (files, settings), for `--json` and logs."""

    def close(self) -> None:
        """Free the model."""
