"""Recognise a resent MSH-10 from the same sending application and facility within a window.

Recent keys live in memory, up to ``max_keys``. When a busy feed pushes keys that are still
inside the window out of memory, the index says so (:meth:`DedupeIndex.covers` is false) and
the channel asks the store, through the MSH-10 index, about keys it does not hold.
"""

from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, str, str]
SWEEP_INTERVAL = 1.0  # seconds between sweeps of expired keys


class DedupeIndex:
    """Recent (MSH-3, MSH-4, MSH-10) keys of one channel, oldest first, expiring after *window* seconds."""

    def __init__(self, window: float, max_keys: int = 200_000) -> None:
        self.window = window
        self.max_keys = max_keys
        self._seen: OrderedDict[Key, tuple[int | None, float]] = OrderedDict()
        self._evicted_until = float("-inf")  # newest time of a key pushed out before it expired
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._seen)

    def covers(self, now: float) -> bool:
        """True when every key of the window is in memory (a miss then means "not seen")."""
        return self._evicted_until < now - self.window

    def lookup(self, key: Key, now: float) -> tuple[int | None, float] | None:
        """The (message id, time) of an earlier message with *key*, if within the window."""
        if now >= self._next_sweep:  # expired keys are swept at most once a second
            self._expire(now)
            self._next_sweep = now + SWEEP_INTERVAL
        hit = self._seen.get(key)
        if hit is not None and hit[1] < now - self.window:
            return None  # expired, not swept yet
        return hit

    def add(self, key: Key, message_id: int | None, at: float) -> None:
        """Remember *key* (the id may be filled in after commit)."""
        self._seen[key] = (message_id, at)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            _, (_, old) = self._seen.popitem(last=False)
            self._evicted_until = max(self._evicted_until, old)

    def set_id(self, key: Key, message_id: int) -> None:
        """Fill in the message id of a key added before its message was committed (keeps its place)."""
        entry = self._seen.get(key)
        if entry is not None:
            self._seen[key] = (message_id, entry[1])

    def mark_incomplete(self, until: float) -> None:
        """Keys up to time *until* exist that are not held in memory (e.g. not loaded at start)."""
        self._evicted_until = max(self._evicted_until, until)

    def forget(self, key: Key) -> None:
        """Drop *key* (its message was never stored)."""
        self._seen.pop(key, None)

    def _expire(self, now: float) -> None:
        limit = now - self.window
        seen = self._seen
        while seen:
            key, (_, at) = next(iter(seen.items()))
            if at >= limit:
                break
            del seen[key]
