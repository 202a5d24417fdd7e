"""Reading a compiled query's rows: streamed from one cursor, or in short pages of one connection each.

Shared by the archive's C-FIND (``archive.query.Find``) and the Modality Worklist
(``ris_core.worklist.Worklist``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Select


@contextmanager
def case_sensitive_like(conn: Connection, needed: bool) -> Iterator[None]:
    """SQLite's LIKE ignores ASCII case; PostgreSQL's does not. Make SQLite's match for this read."""
    sqlite = needed and conn.dialect.name == "sqlite"
    if sqlite:
        conn.exec_driver_sql("PRAGMA case_sensitive_like = ON")
    try:
        yield
    finally:
        if sqlite:
            conn.exec_driver_sql("PRAGMA case_sensitive_like = OFF")


class PagedQuery:
    """Streaming and paging of a compiled query (C-FIND here, the worklist in ``ris_core.worklist``).

    A subclass sets ``fetched``, ``uses_like`` and ``_filters`` (Python filters over the SQL rows)
    and gives ``statement(after=, limit=)`` (rows with an ``rid`` column, in ``rid`` order) and
    ``_build(mapping)`` (the response row, or None when a Python filter drops it).
    """

    fetched: int
    uses_like: bool
    _filters: list[Any]

    def statement(self, *, after: int = 0, limit: int | None = None) -> Select:
        """The SQL of the rows after id *after*, at most *limit*."""
        raise NotImplementedError

    def _build(self, row: Any) -> dict[str, Any] | None:
        raise NotImplementedError

    def _iter(self, conn: Connection, after: int, limit: int | None) -> Iterator[tuple[int, dict[str, Any] | None]]:
        with case_sensitive_like(conn, self.uses_like):
            result = conn.execution_options(yield_per=256).execute(self.statement(after=after, limit=limit))
            try:
                for row in result:
                    self.fetched += 1
                    mapping = row._mapping
                    yield mapping["rid"], self._build(mapping)
            finally:
                result.close()

    def rows(self, conn: Connection, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Matching rows streamed from one cursor on *conn*, at most *limit*."""
        sql_limit = limit if not self._filters else None
        count = 0
        for _rid, row in self._iter(conn, 0, sql_limit):
            if row is not None:
                yield row
                count += 1
                if limit is not None and count >= limit:
                    return

    def page(self, conn: Connection, after: int, size: int) -> tuple[list[dict[str, Any]], int, bool]:
        """(matches among the next *size* rows after id *after*, the last id read, whether more may follow)."""
        rows, last, seen = [], after, 0
        for rid, row in self._iter(conn, after, size):
            last, seen = rid, seen + 1
            if row is not None:
                rows.append(row)
        return rows, last, seen == size

    def paged(self, read: Callable[..., Any], *, page_size: int = 256, limit: int | None = None) -> Iterator[dict]:
        """Matching rows, one short connection per page: ``read(fn, *args)`` runs ``fn(conn, *args)``."""
        after, count, more = 0, 0, True
        while more:
            size = page_size if limit is None or self._filters else min(page_size, limit - count)
            rows, after, more = read(self.page, after, size)
            for row in rows:
                yield row
                count += 1
                if limit is not None and count >= limit:
                    return
