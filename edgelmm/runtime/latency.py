"""Answer within a time budget: how long the first word takes on this machine for K image tokens, and
the largest K that fits a budget.

Time to first token = image encode + image prefill + the question's own prefill and first token, and only
the image prefill grows with K (one position per token, the template's text before the image fixed).
Short measured answers at K = 1, N/8 and N/4 give the image prefill at those counts; between them it is
interpolated, past N/4 extended along the last segment (the prefill's cost per token grows little with
the context). The point at one token keeps the smallest budgets honest: a line through N/8 and N/4 alone
put the fixed part too low there. Seconds at demo and qwen scale, about ten at phi3 scale, once per
machine, model and thread count, remembered in the same store as the runtime's other measured settings.
Torch-free.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgelmm.errors import UserError
from edgelmm.options import check_budget
from edgelmm.runtime.calibration import CalibrationStore, machine_id

PROBE_QUESTION = "Describe the image."
PROBE_ROUNDS = 2


@dataclass(frozen=True)
class LatencyModel:
    """Predicted time to first token, from what was measured on this machine."""

    tokens: int  # the image tokens the vision graph gives
    encode_s: float
    prefill_tokens: list[int]  # image tokens of the measured answers, ascending
    prefill_s: list[float]  # their image prefill (with the template's text before the image)
    question_s: float  # the question's prefill and first token
    created: str = ""

    def __post_init__(self) -> None:
        ks, secs = self.prefill_tokens, self.prefill_s
        if not (isinstance(ks, list) and isinstance(secs, list) and 1 <= len(ks) == len(secs)
                and all(isinstance(k, int) and k >= 1 for k in ks) and ks == sorted(set(ks))
                and all(isinstance(t, (int, float)) and math.isfinite(t) and t >= 0 for t in secs)):
            raise ValueError("measured image prefill points are malformed")

    def image_prefill(self, k):
        """Seconds of image prefill for K tokens (an int or an array of them)."""
        ks, secs = np.asarray(self.prefill_tokens, dtype=float), np.maximum.accumulate(self.prefill_s)
        slope = (secs[-1] - secs[-2]) / (ks[-1] - ks[-2]) if len(ks) > 1 else 0.0
        inside = np.interp(k, ks, secs)
        return np.where(np.asarray(k) > ks[-1], secs[-1] + slope * (np.asarray(k) - ks[-1]), inside)

    def predict(self, k: int) -> float:
        return float(self.encode_s + self.image_prefill(k) + self.question_s)

    def tokens_within(self, budget: float) -> int:
        """The largest K whose predicted time fits `budget` (0 when not even one token fits)."""
        ks = np.arange(1, self.tokens + 1)
        # (a hair of slack: 0.1 / 0.01 is 9.999... in binary floating point)
        fits = self.encode_s + self.image_prefill(ks) + self.question_s <= budget + 1e-9
        return int(ks[fits].max()) if fits.any() else 0  # the prediction never falls as K grows


def measure_latency(model) -> LatencyModel:
    """Short answers at 1, N/8 and N/4 image tokens (twice each)."""
    spec = model.backend.image_spec
    image = np.random.default_rng(0).integers(0, 256, (spec.size, spec.size, 3), dtype=np.uint8)
    n = len(model.encode_image(image))
    counts = sorted({1, max(1, n // 8), max(1, n // 4)})
    figures: dict[int, list] = {k: [] for k in counts}
    try:
        model.answer(image, PROBE_QUESTION, max_tokens=1, image_tokens=counts[-1])  # warm-up
    except UserError:
        raise UserError("this model reads all its image tokens (its vision graph gives no token scores), so "
                        "a time budget cannot shorten its answers") from None
    for _ in range(PROBE_ROUNDS):
        for k in figures:
            figures[k].append(model.answer(image, PROBE_QUESTION, max_tokens=1, image_tokens=k).timings)
    med = {k: {field: statistics.median(getattr(t, field) for t in runs)
               for field in ("image_encode", "image_prefill", "first_token")} for k, runs in figures.items()}
    return LatencyModel(tokens=n, encode_s=statistics.median(m["image_encode"] for m in med.values()),
                        prefill_tokens=counts, prefill_s=[med[k]["image_prefill"] for k in counts],
                        question_s=statistics.median(m["first_token"] for m in med.values()),
                        created=time.strftime("%Y-%m-%dT%H:%M:%S"))


def latency_key(backend: str, model_id: str, threads) -> str:
    """The machine, the backend, the model (its files' hashes, or its folder) and the thread count."""
    return f"latency:{machine_id()}:{backend}:{model_id}:{threads}"


def bundle_id(manifest) -> str:
    return f"{manifest.file('vision').sha256[:16]}-{manifest.file('lm').sha256[:16]}"


def _key_of(model) -> str:
    manifest = getattr(model.backend, "manifest", None)
    model_id = bundle_id(manifest) if manifest else str(model.path.resolve())
    return latency_key(model.backend.name, model_id, model.backend.info().get("threads"))


def latency_for(model, *, force: bool = False, store: CalibrationStore | None = None) -> LatencyModel:
    """This machine's latency model for `model`: stored, or measured now (and stored)."""
    store = store or CalibrationStore()
    key = _key_of(model)
    record = None if force else store.get(key)
    if record is not None:
        try:
            return LatencyModel(**record)
        except (TypeError, ValueError):
            pass  # written by another edgelmm, or damaged: measure again
    latency = measure_latency(model)
    store.put(key, asdict(latency))
    return latency


def tokens_for_budget(model, budget: float) -> int:
    """The image tokens to read so that the first word comes within `budget` seconds, or one clear error."""
    budget = check_budget(budget)
    latency = latency_for(model)
    k = latency.tokens_within(budget)
    if k < 1:
        raise UserError(f"a first word within {budget:g} s is out of reach here: this machine needs about "
                        f"{latency.predict(1):.2f} s with this model (1 image token), "
                        f"{latency.predict(latency.tokens):.2f} s with all {latency.tokens}")
    return k
