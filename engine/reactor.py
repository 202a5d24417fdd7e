"""The reactor ``radbridge run`` installs: Twisted's epoll reactor with a leaner event loop.

Two changes to :class:`~twisted.internet.epollreactor.EPollReactor`, both on the per-event
path (two read events and one group commit per HL7 message):

* each ready descriptor is handled directly instead of through ``log.callWithLogger``,
  which pushes a legacy-log context (six Python frames and a dict copy) per event only so
  that ``twisted.python.log`` messages can name a "system"; radbridge logs through the
  standard library and Twisted's observer there ignores it. Errors are still logged.
* :meth:`callAfterIO` runs a function once the events of the current poll are handled,
  before the reactor waits again: the point where the store's group commit belongs (every
  frame that arrived in this poll, from every connection, is in the batch). It replaces
  ``callLater(0, ...)``, which allocated a timer and went through the timer heap per batch.

Everything else (timers, threads, TLS, signals) is the stock reactor.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.python import log


class RadbridgeReactor(EPollReactor):
    """EPollReactor with direct event dispatch and an after-I/O hook."""

    def __init__(self) -> None:
        super().__init__()
        self._after_io: list[Callable[[], Any]] = []

    def callAfterIO(self, f: Callable[[], Any]) -> None:  # noqa: N802 - Twisted naming
        """Call *f* after the I/O events of the current iteration (or at once in the next one)."""
        self._after_io.append(f)

    def doPoll(self, timeout: float | None) -> None:  # noqa: N802 - Twisted naming
        """Poll, dispatch every ready descriptor, then run the after-I/O calls."""
        if self._after_io:
            timeout = 0  # something is waiting to run: do not sleep before it does
        elif timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                dispatch(selectable, fd, event)
            except BaseException:  # noqa: BLE001 - as callWithLogger did: log and go on
                log.err(None, f"unhandled error handling an event on {selectable!r}")
        self.runAfterIO()

    doIteration = doPoll

    def runAfterIO(self) -> None:
        """Run the after-I/O calls queued so far (calls they queue wait for the next round)."""
        calls = self._after_io
        if not calls:
            return
        self._after_io = []
        for f in calls:
            try:
                f()
            except BaseException:  # noqa: BLE001 - one failing call must not skip the others
                log.err(None, f"unhandled error in after-I/O call {f!r}")


def install() -> RadbridgeReactor:
    """Install :class:`RadbridgeReactor` as the global reactor (before anything imports it)."""
    from twisted.internet.main import installReactor

    reactor = RadbridgeReactor()
    installReactor(reactor)
    return reactor


def soon_caller(reactor: Any) -> Callable[[Callable[[], Any]], None]:
    """``f -> None`` running *f* after the current I/O round: ``callAfterIO``, else ``callLater(0, f)``."""
    after_io = getattr(reactor, "callAfterIO", None)
    if after_io is not None:
        return after_io
    return lambda f: reactor.callLater(0, f)
