"""Retention: whole studies whose newest instance is older than ``retention.max_age``, and old HL7 files.

Each batch deletes rows first, in one short transaction (``store.transact``): the instances,
series and studies of up to ``batch_size`` studies, and patients left without a study, so a
study is never half gone from the index. The files go after COMMIT, off the reactor thread; a
crash in between leaves files that no row names, which ``radbridge archive verify --orphans``
lists. On PostgreSQL the studies are locked (``FOR UPDATE SKIP LOCKED``), so an instance
arriving for a study while it is being deleted waits and then starts it afresh. Logs carry
counts only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, exists, or_, select
from twisted.internet import defer

from archive import files
from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies, hl7_archive
from engine.config.models import RetentionConfig

log = logging.getLogger("radbridge.archive")


@dataclass
class Pruned:
    """What one sweep (or batch) removed."""

    studies: int = 0
    instances: int = 0
    hl7: int = 0
    files: int = 0

    def add(self, other: Pruned) -> None:
        """Add *other*'s counts."""
        self.studies += other.studies
        self.instances += other.instances
        self.hl7 += other.hl7
        self.files += other.files


def thd_expire_studies(conn: Connection, cutoff: float, limit: int) -> tuple[int, list[str]]:
    """Delete the rows of up to *limit* studies last received before *cutoff*; (studies, file paths)."""
    st, se, i, p = dicom_studies, dicom_series, dicom_instances, dicom_patients
    rows = conn.execute(
        select(st.c.id, st.c.study_uid, st.c.patient_ref)
        .where(st.c.received_at < float(cutoff))
        .order_by(st.c.received_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return 0, []
    study_ids = [r.id for r in rows]
    uids = [r.study_uid for r in rows]
    patients = sorted({r.patient_ref for r in rows})
    series_ids = list(conn.execute(select(se.c.id).where(se.c.study_ref.in_(study_ids))).scalars())
    of_studies = or_(i.c.study_uid.in_(uids), i.c.series_ref.in_(series_ids)) if series_ids else i.c.study_uid.in_(uids)
    paths = list(conn.execute(select(i.c.path).where(of_studies)).scalars())
    conn.execute(delete(i).where(of_studies))
    conn.execute(delete(se).where(se.c.study_ref.in_(study_ids)))
    conn.execute(delete(st).where(st.c.id.in_(study_ids)))
    conn.execute(delete(p).where(p.c.id.in_(patients), ~exists().where(st.c.patient_ref == p.c.id)))
    return len(rows), paths


def thd_expire_hl7(conn: Connection, cutoff: float, limit: int) -> list[str]:
    """Delete up to *limit* archived-HL7 rows older than *cutoff*; their file paths."""
    h = hl7_archive
    rows = conn.execute(
        select(h.c.id, h.c.path).where(h.c.archived_at < float(cutoff)).order_by(h.c.archived_at).limit(limit)
    ).all()
    if rows:
        conn.execute(delete(h).where(h.c.id.in_([r.id for r in rows])))
    return [r.path for r in rows]


def remove_files(root: Path, paths: list[str], fsync: bool = True) -> int:
    """Delete archive-relative *paths* (and folders they leave empty); how many files were removed."""
    root = Path(root)
    removed = 0
    folders: set[Path] = set()
    for rel in paths:
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            log.warning("retention: skipped an unsafe path in the index")
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("retention: cannot delete %s: %s", rel, exc.strerror)
            continue
        folders.add(path.parent)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if fsync and folder.is_dir():
            files.fsync_dir(folder)
        files.prune_empty_dirs(folder, root)
    return removed


def prune_sync(store: Any, root: Path, max_age: float, batch_size: int, fsync: bool = True) -> Pruned:
    """Run retention now, synchronously (``radbridge archive prune``)."""
    cutoff = time.time() - max_age
    total = Pruned()
    while True:
        n, paths = store.transact_sync(thd_expire_studies, cutoff, batch_size)
        total.add(Pruned(studies=n, instances=len(paths), files=remove_files(root, paths, fsync)))
        if n < batch_size:
            break
    while True:
        paths = store.transact_sync(thd_expire_hl7, cutoff, batch_size)
        total.add(Pruned(hl7=len(paths), files=remove_files(root, paths, fsync)))
        if len(paths) < batch_size:
            break
    return total


class Retention:
    """The periodic sweep the archive service runs (``reactor.callLater`` every ``interval``)."""

    def __init__(self, archive: Any, config: RetentionConfig, run_blocking: Callable[..., defer.Deferred]) -> None:
        self.archive = archive
        self.config = config
        self.run_blocking = run_blocking
        self.reactor = archive.reactor
        self.store = archive.store
        self.running = False
        self.call: Any = None
        self.current: defer.Deferred | None = None
        self.last: Pruned | None = None

    def start(self, delay: float | None = None) -> None:
        """Schedule the first sweep (after *delay*, default ``min(interval, 60 s)``)."""
        self.running = True
        self._schedule(min(self.config.interval, 60.0) if delay is None else delay)

    def stop(self) -> defer.Deferred | None:
        """Cancel the next sweep; a Deferred of the one in progress, if any."""
        self.running = False
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        return self.current

    def _schedule(self, delay: float) -> None:
        if self.running:
            self.call = self.reactor.callLater(delay, self._run)

    def _run(self) -> None:
        self.call = None
        d = self.current = self.sweep()

        def finished(_: Any) -> None:
            self.current = None
            self._schedule(self.config.interval)

        def failed(failure: Any) -> None:
            log.error("retention sweep failed: %s", failure.type.__name__)
            finished(None)

        d.addCallbacks(finished, failed)

    @defer.inlineCallbacks
    def sweep(self):
        """One sweep: batches of studies, then of HL7 files, until nothing old is left (or stopped)."""
        cutoff = time.time() - (self.config.max_age or 0.0)
        batch = self.config.batch_size
        root, fsync = self.archive.root, self.archive.fsync
        total = Pruned()
        while True:
            n, paths = yield self.store.transact(thd_expire_studies, cutoff, batch)
            removed = yield self.run_blocking(remove_files, root, paths, fsync)
            total.add(Pruned(studies=n, instances=len(paths), files=removed))
            if n < batch or not self.running:
                break
        while self.running:
            paths = yield self.store.transact(thd_expire_hl7, cutoff, batch)
            removed = yield self.run_blocking(remove_files, root, paths, fsync)
            total.add(Pruned(hl7=len(paths), files=removed))
            if len(paths) < batch:
                break
        if total.studies or total.hl7:
            log.info(
                "retention: deleted %d studies (%d instances) and %d HL7 files, %d files removed",
                total.studies, total.instances, total.hl7, total.files,
            )  # fmt: skip
        self.last = total
        return total
