"""RIS counts for ``/metrics``: orders by state, worklist steps by status, unmatched studies.

The engine renders ``/metrics`` on the reactor thread, so the store is never read there. Each
scrape starts one short read on a worker thread (unless one is still running) and waits for it
at most ``wait`` seconds: a healthy store gives fresh counts, a busy or stuck one costs the
scrape that started the read ``wait`` seconds once and the later scrapes nothing; they serve
the last counts read, and ``radbridge_ris_counts_age_seconds`` shows how old those are. A read
that fails is logged and counted (``radbridge_ris_count_failures_total``); the scrape succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, func, select, text

from engine.metrics import RisCounts
from ris_core import states
from ris_core.schema import ris_orders, ris_sps, ris_studies

log = logging.getLogger("radbridge.ris")

WAIT = 0.25  # longest a scrape waits for the store (on the reactor thread)
MIN_INTERVAL = 1.0  # counts younger than this are served without a read (several scrapers)
STATEMENT_TIMEOUT_MS = 5000  # PostgreSQL: the worker thread gives up on the store after this
ORD, SPS = ris_orders.c, ris_sps.c
STEP_STATUSES = tuple(sorted(set(states.SPS_STATUS.values())))


def thd_counts(conn: Connection, *, now: float) -> RisCounts:
    """Orders by state and steps by status (every known value, 0 included), unmatched studies."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
    orders = dict.fromkeys(states.STATES, 0)
    orders.update((state, n) for state, n in conn.execute(select(ORD.state, func.count()).group_by(ORD.state)))
    steps = dict.fromkeys(STEP_STATUSES, 0)
    steps.update((status, n) for status, n in conn.execute(select(SPS.status, func.count()).group_by(SPS.status)))
    unmatched = conn.execute(
        select(func.count()).select_from(ris_studies).where(ris_studies.c.order_ref.is_(None))
    ).scalar_one()
    return RisCounts(orders, steps, unmatched, now)


class ScrapeCounts:
    """The probe the RIS hands ``Metrics.watch_ris``: a bounded wait for a read on a worker thread."""

    def __init__(
        self,
        read_sync: Callable[..., Any],
        metrics: Any,
        *,
        wait: float = WAIT,
        min_interval: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.read_sync, self.metrics = read_sync, metrics
        self.wait, self.min_interval, self.clock = wait, min_interval, clock
        self.last: RisCounts | None = None
        self._lock = threading.Lock()
        self._running: threading.Event | None = None

    def __call__(self) -> RisCounts | None:
        """The freshest counts to hand out now (``None`` before the first read succeeded)."""
        last = self.last
        if last is not None and self.clock() - last.read_at < self.min_interval:
            return last
        started, done = self._start()
        if started:
            done.wait(self.wait)
        return self.last

    def _start(self) -> tuple[bool, threading.Event]:
        """(True, event) when this call started a read, (False, event) when one was already running."""
        with self._lock:
            if self._running is not None:
                return False, self._running
            done = self._running = threading.Event()
        threading.Thread(target=self._read, args=(done,), name="radbridge-ris-metrics", daemon=True).start()
        return True, done

    def _read(self, done: threading.Event) -> None:
        try:
            self.last = self.read_sync(thd_counts, now=self.clock())
        except Exception as exc:  # noqa: BLE001 - any store failure: keep the last counts
            log.warning("reading the RIS counts for /metrics failed: %s", type(exc).__name__)
            self.metrics.ris_count_failed()
        finally:
            with self._lock:
                self._running = None
            done.set()
