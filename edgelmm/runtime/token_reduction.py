"""Fewer image tokens at inference: keep the most important ones, optionally merge the rest (VisionZip).

On a CPU the image's tokens dominate the time to first token (576 of them through Phi-3-mini are most
of it), and most carry little: the vision graph scores each token (see
`modeling.vision_encoder`), and an answer can read only the `keep` that matter most. Of those, `merge`
may be contextual tokens instead: the tokens not kept are grouped around evenly spread ones by cosine
similarity and each group is averaged, so what they held is not lost outright. The kept tokens stay in
their original order, the merged ones follow, and all take consecutive positions in the language model
(as VisionZip feeds them). Torch-free; the same function serves every backend, so the selection is
identical whichever runs the model.
"""

from __future__ import annotations

import numpy as np

from edgelmm.errors import UserError


def check_counts(n: int, keep: int, merge: int = 0) -> None:
    if not isinstance(keep, int) or isinstance(keep, bool) or not 1 <= keep <= n:
        raise UserError(f"image tokens must be a whole number from 1 to {n}, not {keep!r}")
    if not isinstance(merge, int) or isinstance(merge, bool) or not 0 <= merge < keep:
        raise UserError(f"merged tokens must be a whole number from 0 to {keep - 1} (fewer than the image "
                        f"tokens), not {merge!r}")


SELECTIONS = ("importance", "random")  # random: the control that shows what the scores carry


def check_selection(selection: str) -> str:
    if selection not in SELECTIONS:
        raise UserError(f"unknown token selection {selection!r}; valid: {', '.join(SELECTIONS)}")
    return selection


def select(importance: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` most important tokens, in their original order (ties: the earlier token)."""
    order = np.lexsort((np.arange(len(importance)), -np.asarray(importance, dtype=np.float64)))
    return np.sort(order[:count])


def reduce_tokens(embeds: np.ndarray, importance: np.ndarray, keep: int, merge: int = 0) -> np.ndarray:
    """(N, D) embeddings -> (keep, D): the `keep - merge` most important, then `merge` merged ones."""
    n = len(embeds)
    check_counts(n, keep, merge)
    if keep == n:
        return embeds
    dominant = select(importance, keep - merge)
    if merge == 0:
        return embeds[dominant]
    rest = np.setdiff1d(np.arange(n), dominant)  # (R,) in order
    targets = rest[np.linspace(0, len(rest) - 1, merge).round().astype(int)]  # evenly spread over the rest
    unit = embeds / np.maximum(np.linalg.norm(embeds, axis=1, keepdims=True), 1e-12)
    group = np.argmax(unit[rest] @ unit[targets].T, axis=1)  # (R,): the most similar target of each token
    group[np.searchsorted(rest, targets)] = np.arange(merge)  # each target leads its own group, even among twins
    merged = np.stack([embeds[rest[group == g]].mean(axis=0) for g in range(merge)])
    return np.concatenate([embeds[dominant], merged.astype(embeds.dtype)])
