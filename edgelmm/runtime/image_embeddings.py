"""An image's embeddings as the language model reads them, and the fewer of them an answer may read."""

from __future__ import annotations

import numpy as np

from edgelmm.errors import UserError
from edgelmm.runtime.token_reduction import check_counts, reduce_tokens


class ImageEmbeddings:
    """Encoded image embeddings (N, D), with each token's importance (N,) where the model scores them;
    their identity marks their positions in the cache."""

    def __init__(self, array: np.ndarray, importance: np.ndarray | None = None) -> None:
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.importance = importance

    def reduced(self, keep: int | None, merge: int, selection: str = "importance", seed: int = 0) -> ImageEmbeddings:
        """The `keep` tokens an answer reads (all when None)."""
        n = len(self.array)
        if keep is None or (keep == n and merge == 0):
            check_counts(n, n if keep is None else keep, 0 if keep is None else merge)
            return self
        if self.importance is None:
            check_counts(n, keep, merge)
            raise UserError("this model's vision graph gives no token importance (a projector that merges "
                            "tokens, or a bundle exported before edgelmm scored them): it reads all "
                            f"{n} image tokens")
        scores = self.importance if selection == "importance" else np.random.default_rng(seed).random(n)
        return ImageEmbeddings(reduce_tokens(self.array, scores, keep, merge))

    def keys(self) -> list:
        return [(self, k) for k in range(len(self.array))]
