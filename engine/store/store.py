"""The message store: schema upgrade at start, the single writer, and reads off the hot path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection
from twisted.internet import defer, threads

from engine.store.db import make_engine, upgrade
from engine.store.writer import Writer

T = TypeVar("T")


class Store:
    """Owns the SQLAlchemy engine and the writer; ``read``/``transact`` run ``thd_*`` functions."""

    def __init__(
        self,
        url: str,
        reactor: Any,
        *,
        sqlite_synchronous: str = "NORMAL",
        writer_mode: str = "auto",
        max_batch: int = 512,
        migrate: bool = True,
    ) -> None:
        self.url = url
        self.reactor = reactor
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous)
        if migrate:
            upgrade(self.engine)
        self.writer = Writer(self.engine, reactor, mode=writer_mode, max_batch=max_batch)
        self.inline = self.writer.mode == "inline"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def start(self) -> None:
        """Open the writer."""
        self.writer.start()

    def stop(self) -> defer.Deferred:
        """Flush and close."""
        d = self.writer.stop()
        return d.addBoth(lambda r: (self.engine.dispose(), r)[1])

    def read_sync(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn(conn, ...)`` now on a fresh connection."""
        with self.engine.connect() as conn:
            return fn(conn, *args, **kw)

    def transact_sync(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run ``fn(conn, ...)`` in its own transaction now."""
        with self.engine.begin() as conn:
            return fn(conn, *args, **kw)

    def read(self, fn: Callable[[Connection], T], *args: Any, **kw: Any) -> defer.Deferred:
        """``fn(conn, ...)`` off the hot path: inline on SQLite, in a pool thread otherwise."""
        if self.inline:
            return defer.maybeDeferred(self.read_sync, fn, *args, **kw)
        return threads.deferToThread(self.read_sync, fn, *args, **kw)

    def transact(self, fn: Callable[[Connection], T], *args: Any, **kw: Any) -> defer.Deferred:
        """Like :meth:`read` but in a transaction (short maintenance writes such as pruning)."""
        if self.inline:
            return defer.maybeDeferred(self.transact_sync, fn, *args, **kw)
        return threads.deferToThread(self.transact_sync, fn, *args, **kw)
