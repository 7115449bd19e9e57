"""What an answer comes with: its text and the figures of how it was made."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Timings:
    """Seconds spent on one answer (and on loading the model), for `--json` and benchmarks."""

    load: float = 0.0
    image_encode: float = 0.0
    image_prefill: float = 0.0  # reading the image (and the prompt before it) into the cache, in `chat`
    prefill: float = 0.0  # reading the question into the cache
    first_token: float = 0.0  # from the question to the first token of the answer
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    restored_tokens: int = 0  # of the reused: positions brought back from a saved cache (kv_cache_mb)
    image_tokens: int = 0  # image positions the answer read (fewer than the vision graph's with image_tokens=)
    first_token_probability: float | None = None  # what the answer's confidence is made of (runtime.confidence)

    @property
    def tokens_per_second(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def time_to_first_token(self) -> float:
        """From an image and a question given together (`Model.ask`) to the first token."""
        return self.image_encode + self.image_prefill + self.first_token

    def to_dict(self) -> dict:
        return {**{k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()},
                "time_to_first_token": round(self.time_to_first_token, 6),
                "tokens_per_second": round(self.tokens_per_second, 3)}


@dataclass
class Answer:
    """One answer: its text and how it was made. Later features add their findings here."""

    text: str
    timings: Timings

    def to_dict(self) -> dict:
        return {"answer": self.text, "timings": self.timings.to_dict()}
