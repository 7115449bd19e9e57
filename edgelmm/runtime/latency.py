"""Answer within a time budget: how long the first word takes on this machine for K image tokens, and
the largest K that fits a budget.

Time to first token = image encode + image prefill + the question's own prefill and first token, and only
the image prefill grows with K (one position per token, the template's text before the image fixed).
So two short measured answers, at K = N/8 and N/4, give a line through the prefill, the encode and the
question's time: seconds at demo and qwen scale, about ten at phi3 scale, once per machine, model and
thread count, remembered in the same store as the runtime's other measured settings. Torch-free.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgelmm.errors import UserError
from edgelmm.runtime.calibration import CalibrationStore, machine_id

PROBE_QUESTION = "Describe the image."
PROBE_ROUNDS = 2


@dataclass(frozen=True)
class LatencyModel:
    """Predicted time to first token, from what was measured on this machine."""

    tokens: int  # the image tokens the vision graph gives
    encode_s: float
    image_fixed_s: float  # the image prefill's part that does not grow with K
    per_token_s: float
    question_s: float  # the question's prefill and first token
    created: str = ""

    def predict(self, k: int) -> float:
        return self.encode_s + self.image_fixed_s + self.per_token_s * k + self.question_s

    def tokens_within(self, budget: float) -> int:
        """The largest K whose predicted time fits `budget` (0 when not even one token fits)."""
        room = budget - self.predict(0)
        # (a hair of slack: 0.1 / 0.01 is 9.999... in binary floating point)
        k = math.floor(room / self.per_token_s + 1e-9) if self.per_token_s > 0 else self.tokens
        return max(0, min(self.tokens, k))


def check_budget(budget) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise UserError(f"a time budget must be a number of seconds above 0, not {budget!r}")
    return float(budget)


def measure_latency(model) -> LatencyModel:
    """Two short answers at N/8 and N/4 image tokens (twice each), fitted to a line."""
    spec = model.backend.image_spec
    image = np.random.default_rng(0).integers(0, 256, (spec.size, spec.size, 3), dtype=np.uint8)
    n = len(model.encode_image(image))
    small = max(1, n // 8)
    large = max(small + 1, n // 4) if n > 1 else 1
    figures: dict[int, list] = {small: [], large: []}
    try:
        model.answer(image, PROBE_QUESTION, max_tokens=1, image_tokens=small)  # warm-up
    except UserError:
        raise UserError("this model reads all its image tokens (its vision graph gives no token scores), so "
                        "a time budget cannot shorten its answers") from None
    for _ in range(PROBE_ROUNDS):
        for k in figures:
            figures[k].append(model.answer(image, PROBE_QUESTION, max_tokens=1, image_tokens=k).timings)
    med = {k: {field: statistics.median(getattr(t, field) for t in runs)
               for field in ("image_encode", "image_prefill", "first_token")} for k, runs in figures.items()}
    per_token = max(0.0, (med[large]["image_prefill"] - med[small]["image_prefill"]) / max(1, large - small))
    return LatencyModel(tokens=n, encode_s=statistics.median(m["image_encode"] for m in med.values()),
                        image_fixed_s=max(0.0, med[small]["image_prefill"] - per_token * small),
                        per_token_s=per_token, question_s=statistics.median(m["first_token"] for m in med.values()),
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
        except TypeError:
            pass  # written by another edgelmm: measure again
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
