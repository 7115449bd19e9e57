"""The runtime's options, checked in one place: `load` and `ask` in the API and the CLI's flags all call
these, so a value is refused with the same one-line message wherever it comes from.

A check returns the value as the runtime uses it, or raises `UserError`. Out of range means harmful, not
merely unusual: NaN temperatures sample garbage, ten thousand threads exhaust the machine.
"""

from __future__ import annotations

import math
import os

from edgelmm.errors import UserError

MAX_TEMPERATURE = 2.0  # as the OpenAI API: beyond it sampling is noise
MAX_SEED = 2**32 - 1  # samplers take 32-bit seeds


def _whole(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise UserError(f"{name} must be a whole number {span}, not {value!r}")
    return value


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:  # NaN: False
        raise UserError(f"{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)


def max_threads() -> int:
    """More threads than logical CPUs only wait for each other."""
    return os.cpu_count() or 1


def check_threads(n: int | None) -> int | None:
    return None if n is None else _whole(n, "threads", 1, max_threads())


def check_n_ctx(n: int | None) -> int | None:
    return None if n is None else _whole(n, "the context", 16)


def check_max_tokens(n: int) -> int:
    return _whole(n, "max tokens", 1)


def check_temperature(t: float) -> float:
    return _number(t, "temperature", 0.0, MAX_TEMPERATURE)


def check_seed(seed: int) -> int:
    return _whole(seed, "the seed", 0, MAX_SEED)


def check_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise UserError(f"a time budget must be a number of seconds above 0, not {budget!r}")
    return float(budget)


def check_positive(value: float, name: str = "the value") -> float:
    """A finite number above 0 (learning rates, epochs, scales)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise UserError(f"{name} must be a finite number above 0, not {value!r}")
    return float(value)


def check_processes(n: int | None) -> int | None:
    """Worker processes, one per CPU at most."""
    return None if n is None else _whole(n, "workers", 1, max_threads())


def check_top_p(p: float) -> float:
    p = _number(p, "top_p", 0.0, 1.0)
    if p == 0:
        raise UserError("top_p must be above 0 (1 keeps every token)")
    return p


MAX_STOPS, MAX_STOP_LENGTH = 16, 256


def check_stop(stop) -> list[str]:
    """Extra strings that end an answer: a list of up to 16 non-empty texts (or one text)."""
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOPS or not all(
            isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in stop):
        raise UserError(f"stop must be up to {MAX_STOPS} non-empty texts of at most {MAX_STOP_LENGTH} characters")
    return list(stop)


def check_generation(max_tokens: int, temperature: float, seed: int, top_p: float = 1.0, stop=()) -> None:
    """The options of one answer."""
    check_max_tokens(max_tokens)
    check_temperature(temperature)
    check_seed(seed)
    check_top_p(top_p)
    check_stop(stop)
