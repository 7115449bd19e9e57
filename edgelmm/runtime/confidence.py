"""How sure an answer is: the probability the model gave its first token, lowered when the photo check
found a problem, and whether that falls below the model's calibrated threshold.

The first token decides a short answer ("2", "yellow", "yes") and is known before anything is shown,
so a screen reader can say "I am not sure, but" before the answer, not after it. It is read once per
answer, from the logits already computed, so the per-token path is unchanged. On the demo model the
answers whose first token has a probability below the threshold are right far less often
(benchmarks/confidence.py; figures in benchmarks/results/confidence.md).
"""

from __future__ import annotations

import math

import numpy as np

UNSURE_BELOW = 0.5  # without a calibrated threshold in the bundle
PHOTO_PENALTY = 0.5  # a photo with findings (blurred, dark, ...) halves the confidence
UNSURE = "I am not sure, but "


def softmax_at(logits: np.ndarray, token: int) -> float:
    """softmax(logits)[token], without forming the whole distribution twice."""
    top = float(logits.max())
    return float(math.exp(float(logits[token]) - top) / np.exp(logits - top, dtype=np.float64).sum())


def confidence(first_token_probability: float | None, photo_findings: int = 0) -> float | None:
    if first_token_probability is None:
        return None
    return first_token_probability * (PHOTO_PENALTY if photo_findings else 1.0)


def is_unsure(sure: float | None, threshold: float) -> bool:
    """Whether an answer of confidence `sure` is said to be unsure (never when it has none)."""
    return sure is not None and sure < threshold


def unsure_prefix(answer_start: str) -> str:
    """ "I am not sure, but " with the answer's first letter lowered where it starts a plain word."""
    if len(answer_start) >= 2 and answer_start[0].isupper() and answer_start[1].islower():
        return UNSURE + answer_start[0].lower() + answer_start[1:]
    return UNSURE + answer_start
