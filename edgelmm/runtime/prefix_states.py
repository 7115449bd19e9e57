"""Saved KV-cache states of earlier prompts, so that a prompt sharing a long prefix with one served
before (a follow-up about the same photo, after other clients were served) reads only what is new.

A backend holds one sequence. Before its cache is cut back for a prompt that shares less with it,
the model saves it here with its keys (token ids and image positions, see `runtime.model`); a later
prompt that shares more with a saved state than with the live cache gets that state back. Bounded in
bytes, least recently used out; a state whose keys are a prefix of a newer one is dropped, as the
newer holds it.
"""

from __future__ import annotations

from collections import OrderedDict


def common_prefix(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixStates:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._states: OrderedDict[int, tuple[list, bytes]] = OrderedDict()
        self._next = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def best(self, keys: list) -> tuple[int, list | None, bytes | None]:
        """(shared length, keys, state) of the saved state sharing the longest prefix with `keys`."""
        found, shared = None, 0
        for k, (saved, _) in self._states.items():
            n = common_prefix(saved, keys)
            if n > shared:
                found, shared = k, n
        if found is None:
            return 0, None, None
        self._states.move_to_end(found)
        saved, state = self._states[found]
        return shared, saved, state

    def add(self, keys: list, state: bytes) -> None:
        if not keys or len(state) > self.max_bytes:
            return
        for k, (saved, old) in list(self._states.items()):
            if common_prefix(saved, keys) == len(saved):  # a prefix of the new one (or the same)
                del self._states[k]
                self.bytes -= len(old)
        self._states[self._next] = (list(keys), state)
        self._next += 1
        self.bytes += len(state)
        while self.bytes > self.max_bytes:
            _, (_, old) = self._states.popitem(last=False)
            self.bytes -= len(old)
