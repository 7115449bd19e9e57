"""Cutting an answer at the first stop string while it streams."""

from __future__ import annotations


class StopStrings:
    """Cuts an answer at the first stop string, holding back text that may be the start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""  # the answer so far, without any stop string
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        self._pending += piece
        for stop in self.stops:
            at = self._pending.find(stop)
            if at >= 0:
                self._pending, self.stopped = self._pending[:at], True
                return self.flush()
        hold = max((k for stop in self.stops for k in range(1, len(stop)) if self._pending.endswith(stop[:k])),
                   default=0)
        released, self._pending = self._pending[:len(self._pending) - hold], self._pending[len(self._pending) - hold:]
        self.text += released
        return released

    def flush(self) -> str:
        released, self._pending = self._pending, ""
        self.text += released
        return released
