"""Feeding a llama.cpp context token ids and float embeddings, one sequence, position by position.

Image embeddings from the vision graph enter llama.cpp as a float batch (`llama_batch_init` with an
embedding width) at the positions where the prompt holds the image placeholder; text tokens go in as
token batches. Torch-free.
"""

from __future__ import annotations

import ctypes

import numpy as np


class SequenceDecoder:
    """Decodes into sequence 0 of a `llama_cpp.Llama` context, continuing its KV cache."""

    def __init__(self, llm) -> None:
        import llama_cpp

        self.llm = llm
        self.n_embd, self.n_vocab = llm.n_embd(), llm.n_vocab()
        self.pos = 0
        self._lib = llama_cpp
        # One batch of one token, made once: an answer decodes hundreds of them, and a small model
        # decodes one in a fraction of a millisecond, so per-token allocation would show.
        self._one = llama_cpp.llama_batch_init(1, 0, 1)
        self._one.n_tokens = 1
        self._one.n_seq_id[0] = 1
        self._one.seq_id[0][0] = 0
        self._one.logits[0] = True

    def reset(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        self.pos = 0

    def truncate(self, n: int) -> None:
        """Forget every position from `n` on; the cache before it stays."""
        import llama_cpp

        if n < self.pos:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm.ctx), 0, n, -1)
            self.pos = n

    def tokens(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        """Decode token ids; returns logits (n, vocab) if `all_logits` else the last row (vocab,)."""
        return self._in_batches(ids, all_logits, lambda part, logits: self._decode(len(part), logits, tokens=part))

    def embeddings(self, embeds: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Decode float embeddings (n, n_embd) as if they were tokens."""
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise ValueError(f"embeddings must be (n, {self.n_embd}), got {embeds.shape}")
        return self._in_batches(embeds, all_logits,
                                lambda part, logits: self._decode(len(part), logits, embeds=np.ascontiguousarray(part)))

    def _in_batches(self, items, all_logits: bool, decode) -> np.ndarray:
        """llama.cpp decodes at most n_batch positions per call, so longer inputs go in slices."""
        step = self.llm.n_batch
        slices = [items[i:i + step] for i in range(0, len(items), step)]
        out = [decode(part, all_logits) for part in slices]
        return np.concatenate(out) if all_logits else out[-1]

    def decode_token(self, token: int) -> None:
        """Decode one token without copying logits out (the sampler reads them in place)."""
        if self.pos + 1 > self.llm.n_ctx():
            raise ValueError(f"{self.pos + 1} positions exceed the context of {self.llm.n_ctx()}")
        self._one.token[0] = token
        self._one.pos[0] = self.pos
        code = self._lib.llama_decode(self.llm.ctx, self._one)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code}")
        self.pos += 1

    def close(self) -> None:
        if self._one is not None:
            self._lib.llama_batch_free(self._one)
            self._one = None

    __del__ = close

    def _decode(self, n: int, all_logits: bool, tokens=None, embeds=None, copy: bool = True) -> np.ndarray | None:
        import llama_cpp

        if self.pos + n > self.llm.n_ctx():
            raise ValueError(f"{self.pos + n} positions exceed the context of {self.llm.n_ctx()}")
        batch = llama_cpp.llama_batch_init(n, self.n_embd if embeds is not None else 0, 1)
        try:
            batch.n_tokens = n
            if embeds is not None:
                ctypes.memmove(batch.embd, embeds.ctypes.data, embeds.nbytes)
            for i in range(n):
                if tokens is not None:
                    batch.token[i] = tokens[i]
                batch.pos[i] = self.pos + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = all_logits or i == n - 1
            code = llama_cpp.llama_decode(self.llm.ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed with code {code}")
        finally:
            llama_cpp.llama_batch_free(batch)
        self.pos += n
        if not copy:
            return None
        rows = range(n) if all_logits else [n - 1]
        logits = np.stack([np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, i),
                                                 shape=(self.n_vocab,)).copy() for i in rows])
        return logits if all_logits else logits[0]


class Sampler:
    """llama.cpp's own sampler chain: greedy at temperature 0, else nucleus (top_p, where below 1),
    temperature, then a seeded draw."""

    def __init__(self, temperature: float, seed: int = 0, top_p: float = 1.0) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if temperature <= 0:
            llama_cpp.llama_sampler_chain_add(self.chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if top_p < 1:
                llama_cpp.llama_sampler_chain_add(self.chain, llama_cpp.llama_sampler_init_top_p(top_p, 1))
            llama_cpp.llama_sampler_chain_add(self.chain, llama_cpp.llama_sampler_init_temp(temperature))
            llama_cpp.llama_sampler_chain_add(self.chain, llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, llm) -> int:
        """The next token from the logits of the last decoded position."""
        return self._lib.llama_sampler_sample(self.chain, llm.ctx, -1)

    def close(self) -> None:
        if self.chain is not None:
            self._lib.llama_sampler_free(self.chain)
            self.chain = None

    __del__ = close
