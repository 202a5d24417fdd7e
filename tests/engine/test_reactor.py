"""The reactor `radbridge run` installs: direct event dispatch and the after-I/O hook."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock

from engine.reactor import RadbridgeReactor, soon_caller


class Reader(FileDescriptor):
    """Reads one end of a socketpair and records what it saw (or raises, when told to)."""

    def __init__(self, reactor: RadbridgeReactor, sock: socket.socket, log: list, fail: bool = False) -> None:
        super().__init__(reactor)
        self.sock, self.log, self.fail = sock, log, fail

    def fileno(self) -> int:
        """The socket's descriptor."""
        return self.sock.fileno()

    def doRead(self) -> None:  # noqa: N802 - Twisted naming
        """Record the data; raise if this reader is the failing one."""
        self.log.append(("read", self.sock.recv(100)))
        if self.fail:
            raise RuntimeError("boom")


@pytest.fixture()
def reactor() -> Iterator[RadbridgeReactor]:
    """A private (not installed) reactor, closed afterwards."""
    r = RadbridgeReactor()
    yield r
    r.removeAll()
    r._poller.close()


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected socketpair (closed by the test)."""
    return socket.socketpair()


def test_after_io_runs_once_after_every_event_of_the_poll(reactor: RadbridgeReactor) -> None:
    """Both readers' events are handled before the after-I/O call, which runs once."""
    log: list = []
    (a1, a2), (b1, b2) = pair(), pair()
    try:
        for sock in (a2, b2):
            reactor.addReader(Reader(reactor, sock, log))
        a1.send(b"x")
        b1.send(b"y")
        reactor.callAfterIO(lambda: log.append(("after", len(log))))
        reactor.doIteration(1.0)
        assert sorted(log[:2]) == [("read", b"x"), ("read", b"y")]
        assert log[2] == ("after", 2)
        reactor.doIteration(0)
        assert len(log) == 3  # not run again
    finally:
        reactor.removeAll()
        for s in (a1, a2, b1, b2):
            s.close()


def test_pending_after_io_call_does_not_wait_for_io(reactor: RadbridgeReactor) -> None:
    """With an after-I/O call queued, the poll does not block even when asked to wait long."""
    ran: list = []
    reactor.callAfterIO(lambda: ran.append(True))
    reactor.doIteration(30.0)  # would hang the test if it slept
    assert ran == [True]


def test_errors_are_logged_and_do_not_stop_the_round(reactor: RadbridgeReactor) -> None:
    """A failing event handler or after-I/O call is logged; the other handlers and calls still run."""
    from twisted.logger import globalLogPublisher

    errors: list = []
    globalLogPublisher.addObserver(errors.append)
    log: list = []
    (a1, a2), (b1, b2) = pair(), pair()
    try:
        reactor.addReader(Reader(reactor, a2, log, fail=True))
        reactor.addReader(Reader(reactor, b2, log))
        a1.send(b"x")
        b1.send(b"y")

        def bad() -> None:
            raise ValueError("after")

        reactor.callAfterIO(bad)
        reactor.callAfterIO(lambda: log.append("after"))
        reactor.doIteration(1.0)
    finally:
        globalLogPublisher.removeObserver(errors.append)
        reactor.removeAll()
        for s in (a1, a2, b1, b2):
            s.close()
    assert sorted(str(x) for x in log) == sorted([str(("read", b"x")), str(("read", b"y")), "after"])
    failed = {type((e.get("log_failure") or e.get("failure")).value) for e in errors if e.get("isError")}
    assert failed == {RuntimeError, ValueError}


def test_soon_caller_falls_back_to_call_later() -> None:
    """On a reactor without callAfterIO (task.Clock in tests) the call is a callLater(0)."""
    clock = Clock()
    ran: list = []
    soon_caller(clock)(lambda: ran.append(1))
    assert ran == []
    clock.advance(0)
    assert ran == [1]
