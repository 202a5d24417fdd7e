"""Recognise a resent MSH-10 from the same sending application and facility within a window."""

from __future__ import annotations

from collections import OrderedDict

Key = tuple[str, str, str]


class DedupeIndex:
    """Recent (MSH-3, MSH-4, MSH-10) keys of one channel, oldest first, expiring after *window* seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: OrderedDict[Key, tuple[int | None, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def lookup(self, key: Key, now: float) -> tuple[int | None, float] | None:
        """The (message id, time) of an earlier message with *key*, if within the window."""
        self._expire(now)
        return self._seen.get(key)

    def add(self, key: Key, message_id: int | None, at: float) -> None:
        """Remember *key* (the id may be filled in after commit)."""
        self._seen[key] = (message_id, at)
        self._seen.move_to_end(key)

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
