"""RIS counts on /metrics: read on a worker thread at scrape time, a bounded wait, never a failed scrape."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError
from twisted.internet.task import Clock

from engine.metrics import Metrics, RisCounts
from engine.store.store import Store
from ris_core import images
from ris_core.config import CompiledRis
from ris_core.metrics import ScrapeCounts, thd_counts
from ris_core.states import STATES
from tests.ris import messages as m
from tests.ris.conftest import NOW, apply, ris_with_outputs


def scrape(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape, parsed back from the text exposition."""
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def orders(got: dict[tuple[str, tuple], float]) -> dict[str, float]:
    """radbridge_ris_orders by state."""
    return {dict(labels)["state"]: v for (name, labels), v in got.items() if name == "radbridge_ris_orders"}


def fill(store: Store, rt: CompiledRis) -> None:
    """Two scheduled orders, one canceled, and a study no order names."""
    apply(store, rt, m.orm("O1", accession="ACC1", placer="PL1", steps=("S1",), study_uid="1.2.3.1"))
    apply(store, rt, m.orm("O2", accession="ACC2", placer="PL2", steps=("S2",), study_uid="1.2.3.2"))
    apply(store, rt, m.orm("O3", accession="ACC3", placer="PL3", steps=("S3",), study_uid="1.2.3.3"))
    apply(store, rt, m.orm("O4", control="CA", accession="ACC3", placer="PL3", steps=("S3",), study_uid="1.2.3.3"))
    attrs = {"AccessionNumber": "NOPE", "StudyInstanceUID": "1.2.3.99", "PatientID": "P9"}
    store.transact_sync(images.thd_image_stored, attrs, message_id=None, now=NOW)


def test_counts_query_groups_by_state_with_every_state_present(any_store: Store, rt: CompiledRis) -> None:
    """thd_counts counts orders per state (absent states as 0), steps per status and unmatched studies."""
    fill(any_store, rt)
    counts = any_store.read_sync(thd_counts, now=NOW)
    assert set(counts.orders) == set(STATES)
    assert counts.orders["SCHEDULED"] == 2 and counts.orders["CANCELED"] == 1
    assert sum(counts.orders.values()) == 3
    assert counts.steps["SCHEDULED"] == 2 and sum(counts.steps.values()) == 3
    assert counts.unmatched_studies == 1
    assert counts.read_at == NOW


def test_service_exports_counts_while_running(sqlite_store: Store, clock: Clock, rt: CompiledRis,
                                              tmp_path: Path) -> None:  # fmt: skip
    """A started RisService reports its counts on the engine's /metrics; after stop they are gone."""
    fill(sqlite_store, rt)
    metrics = Metrics()
    service, _ = ris_with_outputs(sqlite_store, clock, tmp_path, metrics=metrics)
    got = scrape(metrics)
    assert orders(got)["SCHEDULED"] == 2 and orders(got)["CANCELED"] == 1 and orders(got)["ORDERED"] == 0
    assert got[("radbridge_ris_unmatched_studies", ())] == 1
    assert got[("radbridge_ris_worklist_steps", (("status", "SCHEDULED"),))] == 2
    assert got[("radbridge_ris_counts_age_seconds", ())] < 5
    service.stop()
    assert orders(scrape(metrics)) == {}


def counts(n: int, read_at: float) -> RisCounts:
    """Counts with *n* scheduled orders."""
    return RisCounts({"SCHEDULED": n}, {}, 0, read_at)


class SlowStore:
    """A read_sync whose reads block until released (a store that is busy or stuck)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reads = 0
        self.n = 0

    def read_sync(self, fn: Any, *, now: float) -> RisCounts:
        """Count the read, wait for the release, answer with the next count."""
        self.reads += 1
        self.release.wait(10)
        self.n += 1
        return counts(self.n, now)


def test_busy_store_costs_one_bounded_wait_and_serves_the_last_counts() -> None:
    """A stuck read delays the scrape that started it by ``wait`` only; later scrapes neither wait nor read again."""
    slow, metrics = SlowStore(), Metrics()
    probe = ScrapeCounts(slow.read_sync, metrics, wait=0.2, min_interval=0.0)
    metrics.watch_ris(probe)
    slow.release.set()
    assert orders(scrape(metrics)) == {"SCHEDULED": 1}  # a healthy store: fresh counts in this scrape
    slow.release.clear()
    started = time.monotonic()
    first = scrape(metrics)
    waited = time.monotonic() - started
    assert 0.15 <= waited < 2
    assert orders(first) == {"SCHEDULED": 1}  # the last counts, not an empty or failed scrape
    started = time.monotonic()
    second = scrape(metrics)
    assert time.monotonic() - started < 0.15
    assert orders(second) == {"SCHEDULED": 1} and slow.reads == 2
    slow.release.set()
    for _ in range(100):  # the stuck read finishes on its thread and its counts are served next
        if probe.last is not None and probe.last.orders["SCHEDULED"] == 2:
            break
        time.sleep(0.01)
    assert orders(scrape(metrics))["SCHEDULED"] in (2, 3)


def test_failed_read_keeps_the_scrape_and_is_counted() -> None:
    """A store error is counted, the scrape succeeds, and no made-up counts appear."""
    metrics = Metrics()

    def locked(fn: Any, *, now: float) -> RisCounts:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    metrics.watch_ris(ScrapeCounts(locked, metrics, wait=1.0))
    metrics.received("in")
    got = scrape(metrics)
    assert got[("radbridge_messages_received_total", (("channel", "in"),))] == 1
    assert got[("radbridge_ris_count_failures_total", ())] == 1
    assert orders(got) == {} and ("radbridge_ris_counts_age_seconds", ()) not in got


def test_recent_counts_are_served_without_a_read() -> None:
    """Counts younger than ``min_interval`` are served as they are (several scrapers, one read)."""
    now = [1000.0]
    reads: list[float] = []

    def read(fn: Any, *, now: float) -> RisCounts:
        reads.append(now)
        return counts(len(reads), now)

    probe = ScrapeCounts(read, Metrics(), wait=1.0, min_interval=5.0, clock=lambda: now[0])
    assert probe().orders == {"SCHEDULED": 1}
    now[0] += 4
    assert probe().orders == {"SCHEDULED": 1} and len(reads) == 1
    now[0] += 2
    assert probe().orders == {"SCHEDULED": 2} and reads == [1000.0, 1006.0]
