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
        self.llm = llm
        self.n_embd, self.n_vocab = llm.n_embd(), llm.n_vocab()
        self.pos = 0

    def reset(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm.ctx), True)
        self.pos = 0

    def tokens(self, ids: list[int], all_logits: bool = False) -> np.ndarray:
        """Decode token ids; returns logits (n, vocab) if `all_logits` else the last row (vocab,)."""
        return self._decode(len(ids), all_logits, tokens=ids)

    def embeddings(self, embeds: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Decode float embeddings (n, n_embd) as if they were tokens."""
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise ValueError(f"embeddings must be (n, {self.n_embd}), got {embeds.shape}")
        return self._decode(len(embeds), all_logits, embeds=embeds)

    def _decode(self, n: int, all_logits: bool, tokens=None, embeds=None) -> np.ndarray:
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
        rows = range(n) if all_logits else [n - 1]
        logits = np.stack([np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, i),
                                                 shape=(self.n_vocab,)).copy() for i in rows])
        return logits if all_logits else logits[0]
