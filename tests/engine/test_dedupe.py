"""The in-memory index of recent (MSH-3, MSH-4, MSH-10) keys."""

from __future__ import annotations

from engine.dedupe import SWEEP_INTERVAL, DedupeIndex

K1, K2, K3 = ("A", "F", "1"), ("A", "F", "2"), ("A", "F", "3")


def test_lookup_within_window() -> None:
    """A key added is found until the window has passed, and not after."""
    idx = DedupeIndex(window=10.0)
    idx.add(K1, 5, 100.0)
    assert idx.lookup(K1, 105.0) == (5, 100.0)
    assert idx.lookup(K1, 110.0) == (5, 100.0)
    assert idx.lookup(K1, 110.1) is None
    assert idx.lookup(K2, 105.0) is None


def test_expired_keys_are_swept() -> None:
    """Expired keys leave memory at the next sweep (at most SWEEP_INTERVAL apart)."""
    idx = DedupeIndex(window=10.0)
    idx.add(K1, 1, 100.0)
    idx.add(K2, 2, 105.0)
    idx.lookup(K3, 100.0)
    assert len(idx) == 2
    idx.lookup(K3, 112.0)
    assert len(idx) == 1  # K1 swept, K2 still inside the window
    idx.lookup(K3, 116.0 + SWEEP_INTERVAL)
    assert len(idx) == 0


def test_max_keys_and_covers() -> None:
    """Past max_keys the oldest keys are evicted and the index no longer covers the window."""
    idx = DedupeIndex(window=10.0, max_keys=2)
    idx.add(K1, 1, 100.0)
    idx.add(K2, 2, 101.0)
    assert idx.covers(101.0)
    idx.add(K3, 3, 102.0)
    assert len(idx) == 2 and idx.lookup(K1, 102.0) is None
    assert not idx.covers(102.0)
    assert idx.covers(110.5)  # the evicted key's window is over


def test_forget_and_readd() -> None:
    """forget() drops a key; adding again refreshes its time and message id."""
    idx = DedupeIndex(window=10.0)
    idx.add(K1, None, 100.0)
    idx.add(K1, 7, 100.5)
    assert idx.lookup(K1, 101.0) == (7, 100.5)
    idx.forget(K1)
    assert idx.lookup(K1, 101.0) is None


def test_set_id_fills_in_without_moving_the_key() -> None:
    """set_id records the committed message id and keeps the key's place and time."""
    idx = DedupeIndex(window=10.0, max_keys=2)
    idx.add(K1, None, 100.0)
    idx.add(K2, None, 101.0)
    idx.set_id(K1, 9)
    assert idx.lookup(K1, 102.0) == (9, 100.0)
    idx.add(K3, None, 102.0)  # evicts the oldest, which is still K1
    assert idx.lookup(K1, 102.0) is None and idx.lookup(K2, 102.0) == (None, 101.0)
    idx.set_id(("no", "such", "key"), 1)
    assert len(idx) == 2
