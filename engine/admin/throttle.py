"""Failed password logins slow an attacker down: too many in a window for one user name or one address → 429.

Counted in memory per process (a restart forgets them; several nodes each count their own), per
user name and per remote address, over a sliding window. A success clears the user name's count.
"""

from __future__ import annotations

from collections import deque

USER_LIMIT = 5  # failures per user name within WINDOW
ADDRESS_LIMIT = 20  # failures per remote address within WINDOW (many names tried from one place)
WINDOW = 900.0  # seconds


class LoginThrottle:
    """Sliding windows of failure times by key (``user:NAME``, ``addr:IP``)."""

    def __init__(
        self, user_limit: int = USER_LIMIT, address_limit: int = ADDRESS_LIMIT, window: float = WINDOW
    ) -> None:
        self.limits = {"user": user_limit, "addr": address_limit}
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, username: str, address: str, now: float) -> float:
        """Seconds until a login for *username* from *address* may be tried again (0: now)."""
        wait = 0.0
        for kind, value in (("user", username), ("addr", address)):
            times = self._recent(f"{kind}:{value}", now)
            if len(times) >= self.limits[kind]:
                wait = max(wait, times[-self.limits[kind]] + self.window - now)
        return wait

    def failed(self, username: str, address: str, now: float) -> None:
        """Count a failed login."""
        for key in (f"user:{username}", f"addr:{address}"):
            self._failures.setdefault(key, deque()).append(now)
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, username: str) -> None:
        """Forget the user name's failures (the address keeps its count)."""
        self._failures.pop(f"user:{username}", None)
