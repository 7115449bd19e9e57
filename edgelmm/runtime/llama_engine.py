"""A llama.cpp model and context opened through llama-cpp-python's C API, with every setting in reach.

llama-cpp-python's high-level `Llama` class hides settings that decide speed and memory on a CPU: the
weight re-layout at load (`use_extra_bufts`, on by default, which makes Q4_K_M prefill slower on some
CPUs and faster for Q4_0), the micro-batch size, and a context that cannot grow. This module opens the
model with those settings chosen by the caller, memory-maps the weights (no second copy unless the
re-layout asks for one), sizes the KV cache to what is needed and grows it when a conversation
outgrows it, carrying the cached positions over. It offers the small surface `llama_batch` and the
llamacpp backend use (`ctx`, `model`, `n_ctx()`, `n_batch`, `n_embd()`, `n_vocab()`, `tokenize`,
`detokenize`), the same names as `Llama`'s. Torch-free.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edgelmm.cpu import cpu_info
from edgelmm.quiet import native_stderr_silenced

CONTEXT_STEP = 256  # contexts are sized in multiples of this (llama.cpp pads the KV cache to 256 anyway)


class EngineError(RuntimeError):
    """llama.cpp could not load the model or make a context."""


@dataclass(frozen=True)
class EngineSettings:
    """How llama.cpp runs one model on this machine."""

    n_threads: int = 1
    repack: bool = True  # llama.cpp's CPU weight re-layout (`use_extra_bufts`), its own default
    n_batch: int = 512  # positions per llama_decode call
    n_ubatch: int = 512  # positions per compute graph (micro-batch) inside one call
    flash_attn: bool = True  # llama.cpp's own default on CPU; the Python binding's high-level class turns it off


_LOG_TO_STDERR = {"enabled": False}


def _log(level: int, text: bytes, user_data) -> None:
    if _LOG_TO_STDERR["enabled"] and text:
        sys.stderr.write(text.decode("utf-8", errors="replace"))


_log_callback = None  # kept alive here: llama.cpp calls it from native code


def set_verbose(verbose: bool) -> None:
    """llama.cpp's logs go to stderr when `verbose`, nowhere otherwise (it logs from every call that
    makes or frees a context, not only at load)."""
    global _log_callback
    import llama_cpp

    if _log_callback is None:
        _log_callback = llama_cpp.llama_log_callback(_log)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    _LOG_TO_STDERR["enabled"] = verbose


def default_threads() -> int:
    """One thread per physical core this process may run on: llama.cpp's threads gain nothing from a
    core's second hyper-thread, and lose to it when both share one core's execution units."""
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        logical = os.cpu_count() or 1
    info = cpu_info()
    try:
        siblings, cores = int(info.get("siblings", 0)), int(info.get("cpu cores", 0))
    except ValueError:
        siblings = cores = 0
    per_core = siblings // cores if siblings and cores and siblings >= cores else 1
    return max(1, logical // per_core)


def round_up(n: int, step: int = CONTEXT_STEP) -> int:
    return -(-n // step) * step


class LlamaEngine:
    """One llama.cpp model and one context (sequence 0) over it."""

    def __init__(self, path: str | Path, settings: EngineSettings, n_ctx: int, *, max_ctx: int | None = None,
                 verbose: bool = False) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.settings = settings
        self.verbose = verbose
        self.ctx = None
        set_verbose(verbose)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0  # the CPU build's default (-1, "all") made repacked decodes crash here
        params.use_mmap = True
        params.use_extra_bufts = settings.repack
        with native_stderr_silenced(not verbose):
            self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise EngineError(f"llama.cpp cannot load {Path(path).name}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self._n_embd = llama_cpp.llama_model_n_embd(self.model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.max_ctx = max_ctx or llama_cpp.llama_model_n_ctx_train(self.model)
        self.ctx = self._new_context(min(round_up(n_ctx), self.max_ctx))
        self._pieces: dict[int, bytes] = {}

    def _new_context(self, n_ctx: int):
        lib = self._lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = self.settings.n_batch
        params.n_ubatch = min(self.settings.n_ubatch, self.settings.n_batch)
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self.settings.n_threads
        params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.settings.flash_attn
                                  else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.no_perf = True
        with native_stderr_silenced(not self.verbose):
            ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise EngineError(f"llama.cpp cannot make a context of {n_ctx} positions")
        # What llama.cpp made of the request: it pads the context and caps a batch at the context.
        self.n_batch = lib.llama_n_batch(ctx)
        self.max_ctx = max(self.max_ctx, lib.llama_n_ctx(ctx))
        return ctx

    # ---- the names llama_batch and the backend use (as on llama_cpp.Llama) -----------------------

    def n_ctx(self) -> int:
        return self._lib.llama_n_ctx(self.ctx)

    def n_embd(self) -> int:
        return self._n_embd

    def n_vocab(self) -> int:
        return self._n_vocab

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = True) -> list[int]:
        room = len(text) + 8
        buf = (self._lib.llama_token * room)()
        n = self._lib.llama_tokenize(self.vocab, text, len(text), buf, room, add_bos, special)
        if n < 0:  # never for byte-level vocabularies; a tokenizer may still emit more tokens than bytes
            buf = (self._lib.llama_token * -n)()
            n = self._lib.llama_tokenize(self.vocab, text, len(text), buf, -n, add_bos, special)
        return list(buf[:n])

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return b"".join(self.piece(t, special) for t in tokens)

    def piece(self, token: int, special: bool = False) -> bytes:
        """A token's text as UTF-8 bytes (cached: answers repeat tokens)."""
        key = token if not special else -1 - token
        if key not in self._pieces:
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            self._pieces[key] = buf.raw[:n]
        return self._pieces[key]

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def last_logits(self):
        """The logits of the last decoded position, as a NumPy view (valid until the next decode)."""
        import numpy as np

        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self.ctx, -1), shape=(self._n_vocab,))

    # ---- growing ----------------------------------------------------------------------------------

    def ensure_context(self, n_positions: int) -> bool:
        """Make the context hold at least `n_positions`, keeping what sequence 0 holds; False when the
        model's trained context cannot hold them."""
        if n_positions <= self.n_ctx():
            return True
        if n_positions > self.max_ctx:
            return False
        lib = self._lib
        # Double (at least) so a growing conversation re-allocates a logarithmic number of times.
        new_size = min(self.max_ctx, max(round_up(n_positions), 2 * self.n_ctx()))
        size = lib.llama_state_seq_get_size(self.ctx, 0)
        state = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self.ctx, state, size, 0)
        new_ctx = self._new_context(new_size)
        if lib.llama_state_seq_set_data(new_ctx, state, written, 0) == 0:
            lib.llama_free(new_ctx)
            raise EngineError("llama.cpp could not carry the cache over to a larger context")
        lib.llama_free(self.ctx)
        self.ctx = new_ctx
        return True

    # ---- saving and restoring the sequence ------------------------------------------------------

    def save_sequence(self) -> bytes:
        """Sequence 0's KV cache as bytes."""
        lib = self._lib
        size = lib.llama_state_seq_get_size(self.ctx, 0)
        state = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self.ctx, state, size, 0)
        return bytes(state[:written]) if written != size else bytes(state)

    def load_sequence(self, state: bytes) -> None:
        """Replace sequence 0's KV cache with one from `save_sequence`."""
        lib = self._lib
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if lib.llama_state_seq_set_data(self.ctx, buf, len(state), 0) == 0:
            raise EngineError("llama.cpp could not restore a saved cache")

    def close(self) -> None:
        if self.ctx:
            self._lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self._lib.llama_model_free(self.model)
            self.model = None

    __del__ = close
