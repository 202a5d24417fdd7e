"""The ``archive`` service: received DICOM files checked, checksummed and placed under the root.

The DICOM SCP calls :meth:`Archive.receive` from pynetdicom's handler threads with the temp
file pynetdicom wrote into :attr:`Archive.incoming`; it then commits :meth:`Archive.index_op`
with the ``dicom.stored`` event in one store transaction (``ChannelService.ingest_event``) and
calls :meth:`Archive.discard` when that failed or the index kept another file.

C-STORE statuses (PS3.4 B.2.3, PS3.7 C): 0x0000 stored or replaced; 0xB006 ("elements
discarded", a warning) when ``keep_first`` kept the first copy of a SOP Instance; 0x0111
("duplicate SOP instance") when ``reject`` refused one; 0xC000 ("cannot understand") for a
file that cannot be parsed; 0xC001 (same class, our sub-code) when a required UID is missing,
invalid, or a layout attribute cannot be used in a path; 0xA900 ("data set does not match SOP
class") when the file's SOP Class or SOP Instance UID differs from the request's (dcmtk's
storescp answers both with 0xA900 too).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import field_validator
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from archive import files
from archive.header import CANNOT_UNDERSTAND, MISSING_UID, InvalidInstance, read_header
from archive.index import IndexResult, StoredInstance, index_op, statements
from archive.layout import INCOMING, check_hl7_layout, check_layout, instance_path
from archive.retention import Retention
from archive.schema import dicom_instances
from engine.components import BuildContext
from engine.config.models import ArchiveConfig

__all__ = [
    "CANNOT_UNDERSTAND", "DOES_NOT_MATCH", "MISSING_UID", "Archive", "ArchiveServiceConfig", "IndexResult",
    "InvalidInstance", "StoredInstance", "build_archive",
]  # fmt: skip

log = logging.getLogger("radbridge.archive")

DOES_NOT_MATCH = 0xA900
STALE_AFTER = 3600.0  # seconds: older files in .incoming are leftovers of aborted associations
OUTCOME_STATUS = {"stored": 0x0000, "replaced": 0x0000, "duplicate_kept": 0xB006, "duplicate_rejected": 0x0111}


class ArchiveServiceConfig(ArchiveConfig):
    """``archive:`` with its layouts checked (the model this service registers)."""

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        check_layout(value)
        return value

    @field_validator("hl7_layout")
    @classmethod
    def _hl7_layout(cls, value: str) -> str:
        check_hl7_layout(value)
        return value


RunBlocking = Callable[..., defer.Deferred]


class Archive:
    """Files under ``root`` laid out by UIDs; index rows written through the store's writer."""

    def __init__(
        self, root: Path, config: ArchiveConfig, store: Any, reactor: Any, *, metrics: Any = None,
        run_blocking: RunBlocking | None = None,
    ) -> None:  # fmt: skip
        check_layout(config.layout)
        check_hl7_layout(config.hl7_layout)
        self.root = Path(root).resolve()
        self.incoming = self.root / INCOMING
        self.config = config
        self.layout = config.layout
        self.policy = config.duplicates
        self.fsync = config.fsync
        self.store = store
        self.reactor = reactor
        self.metrics = metrics
        self._pool: ThreadPool | None = None
        self._run_blocking = run_blocking
        self.retention: Retention | None = None
        self._dialect = store.engine.dialect if store is not None else None
        self._locks: dict[str, list[Any]] = {}  # SOP Instance UID -> [lock, users]
        self._locks_guard = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the folders, check hard links work, drop stale temp files, start retention."""
        files.ensure_dir(self.incoming, self.fsync)
        if self.policy != "replace":
            self._check_links()  # keep_first and reject place files with os.link
        removed = self.sweep_incoming()
        if removed:
            log.info("archive: removed %d stale files from %s", removed, self.incoming)
        if self._run_blocking is None:
            self._pool = ThreadPool(0, 2, name="radbridge-archive")
            self._pool.start()
        if self.config.retention.max_age is not None and self.store is not None:
            self.retention = Retention(self, self.config.retention, self.run_blocking)
            self.retention.start()

    def stop(self) -> defer.Deferred | None:
        """Stop retention (a batch in progress finishes) and the thread pool."""
        d = self.retention.stop() if self.retention is not None else None
        self.retention = None

        def _pool(result: Any) -> Any:
            if self._pool is not None:
                self._pool.stop()
                self._pool = None
            return result

        if d is None:
            _pool(None)
            return None
        return d.addBoth(_pool)

    def run_blocking(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run blocking *f* off the reactor thread (the archive's small pool)."""
        if self._run_blocking is not None:
            return self._run_blocking(f, *args)
        return threads.deferToThreadPool(self.reactor, self._pool, f, *args)

    def _check_links(self) -> None:
        probe = self.incoming / f".link-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            os.link(probe, probe.with_name(probe.name + "-2"))
        except OSError as exc:
            raise RuntimeError(f"archive root {self.root} must support hard links: {exc.strerror}") from None
        finally:
            for p in (probe, probe.with_name(probe.name + "-2")):
                p.unlink(missing_ok=True)

    def sweep_incoming(self, older_than: float = STALE_AFTER) -> int:
        """Delete files in ``.incoming`` older than *older_than* seconds; how many were removed."""
        cutoff = time.time() - older_than
        removed = 0
        try:
            entries = list(os.scandir(self.incoming))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed

    # -- receiving (pynetdicom handler threads) ----------------------------------------------------
    def receive(
        self, temp_path: Path, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
        calling_ae: str, channel: str, defer_sync: bool = False,
    ) -> StoredInstance:  # fmt: skip
        """Check, checksum and place one received file; InvalidInstance (temp deleted) if refused.

        With *defer_sync* a newly linked file is complete and visible but not yet flushed to disk
        (``stored.unsynced``): the caller runs :meth:`sync` (e.g. while its store transaction
        commits) before it answers. A replacement (``replace`` policy, or a damaged copy
        repaired) is always flushed before its name changes.
        """
        temp = Path(temp_path)
        try:
            return self._receive(
                temp, sop_class_uid, sop_instance_uid, transfer_syntax, calling_ae, channel, defer_sync
            )
        finally:
            temp.unlink(missing_ok=True)

    @contextmanager
    def instance_lock(self, sop_instance_uid: str) -> Iterator[None]:
        """Held by the SCP from :meth:`receive` until the instance's transaction is done.

        One lock per SOP Instance UID being stored (made on demand, dropped when unused): copies of
        one instance never overlap, different instances never wait for each other. In one process
        only (several nodes sharing one archive folder are not serialised).
        """
        with self._locks_guard:
            entry = self._locks.setdefault(sop_instance_uid, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._locks_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[sop_instance_uid]

    def sync(self, stored: StoredInstance) -> None:
        """Flush a file :meth:`receive` placed with ``defer_sync`` (its data, then its folder entry)."""
        if not stored.unsynced:
            return
        path = self.root / stored.path
        files.fsync_file(path)
        files.fsync_dir(path.parent)
        stored.unsynced = False

    def _receive(
        self, temp: Path, sop_class: str, sop_uid: str, ts: str, calling_ae: str, channel: str,
        defer_sync: bool = False,
    ) -> StoredInstance:  # fmt: skip
        header = read_header(temp, ts)
        attrs = header.attrs
        if attrs["SOPInstanceUID"] != sop_uid:
            raise InvalidInstance(DOES_NOT_MATCH, "SOP Instance UID differs from the C-STORE request", "sop_mismatch")
        if attrs["SOPClassUID"] != sop_class:
            raise InvalidInstance(DOES_NOT_MATCH, "SOP Class UID differs from the C-STORE request", "sop_mismatch")
        try:
            rel = instance_path(attrs, self.layout)
        except ValueError as exc:
            raise InvalidInstance(MISSING_UID, str(exc), "layout") from None
        size = os.stat(temp).st_size
        sha256 = files.sha256_file(temp)
        final = self.root / rel
        deferred = defer_sync and self.fsync and self.policy != "replace"
        if deferred:
            files.ensure_dir(final.parent, self.fsync)  # new folders are made durable now, as before
        placed = files.place_file(temp, final, policy=self.policy, fsync=self.fsync and not deferred)
        if placed == files.EXISTS:
            outcome = "duplicate_kept" if self.policy == "keep_first" else "duplicate_rejected"
            existing = self._existing(final, header, size, sha256)
            if existing is None:  # the copy at final is damaged: the one received replaces it
                log.warning("archive: the file of %s was damaged; replaced by the copy received", sop_uid)
                placed = files.place_file(temp, final, policy="replace", fsync=self.fsync)
                outcome, deferred = "replaced", False
            else:
                size, sha256, header = existing
        else:
            outcome = "replaced" if placed == files.REPLACED else "stored"
        stored = StoredInstance(
            outcome=outcome, status=OUTCOME_STATUS[outcome], path=rel, size=size, sha256=sha256,
            attrs=header.attrs, sop_class_uid=sop_class, sop_instance_uid=sop_uid,
            transfer_syntax=header.transfer_syntax or ts, calling_ae=calling_ae, channel=channel,
            policy=self.policy, placed=placed != files.EXISTS, levels=header.levels(),
            unsynced=deferred and placed == files.PLACED,
        )  # fmt: skip
        log.debug("archive: %s %s (%d bytes)", outcome, sop_uid, size)
        return stored

    def _existing(self, final: Path, header: Any, size: int, sha256: str) -> tuple[int, str, Any] | None:
        """Size, checksum and header describing the copy already at *final*; None if that copy is damaged.

        Damaged: its size or SHA-256 differ from the index row naming it, or, with no row, it cannot
        be parsed. (A crash can leave a file whose data never reached the disk behind a committed
        row; the sender, never answered, sends it again, and that copy repairs it.)
        """
        sop_uid = header.attrs["SOPInstanceUID"]
        row = None
        if self.store is not None:
            row = self.store.read_sync(
                lambda conn: conn.execute(
                    dicom_instances.select()
                    .with_only_columns(dicom_instances.c.size, dicom_instances.c.sha256, dicom_instances.c.path)
                    .where(dicom_instances.c.sop_uid == sop_uid)
                ).first()
            )
        try:
            actual_size = os.stat(final).st_size
        except FileNotFoundError:
            return None
        if row is not None and row.path == os.path.relpath(final, self.root).replace(os.sep, "/"):
            if actual_size != int(row.size) or files.sha256_file(final) != row.sha256:
                return None
            return int(row.size), row.sha256, header
        # A file no row names yet (its own commit is pending, or a crash came between): describe it, so
        # that the index op can adopt it with its real checksum if no other op records it first.
        try:
            existing = read_header(final)
        except InvalidInstance:
            return None
        return actual_size, files.sha256_file(final), existing

    # -- what the SCP does after receive -----------------------------------------------------------
    def index_op(self, stored: StoredInstance) -> Callable[[Any, Any, int | None], IndexResult]:
        """The store-writer op that records *stored* in the index (see ``archive.index``)."""
        return index_op(stored, self._dialect)

    def discard(self, stored: StoredInstance) -> bool:
        """Remove the file *stored* placed (its transaction failed or the index kept another); True if removed.

        Only a file this archive newly created is removed: a kept duplicate belongs to the first
        copy, and a replaced file cannot be restored (verify reports it until it is stored again).
        """
        if not stored.placed or stored.outcome != "stored":
            return False
        removed = files.remove_file(self.abspath(stored.path), self.fsync)
        if removed:
            log.info("archive: discarded %s (not indexed)", stored.sop_instance_uid)
        return removed

    def event_payload(self, stored: StoredInstance) -> dict[str, Any]:
        """The payload of the ``dicom.stored`` event."""
        return {
            "path": stored.path, "sop_class_uid": stored.sop_class_uid, "sop_instance_uid": stored.sop_instance_uid,
            "transfer_syntax": stored.transfer_syntax, "size": stored.size, "sha256": stored.sha256,
            "calling_ae": stored.calling_ae, "outcome": stored.outcome,
        }  # fmt: skip

    def abspath(self, relative: str) -> Path:
        """The absolute path of an archive-relative path; ValueError if it would leave the root."""
        if not relative or os.path.isabs(relative) or "\0" in relative:
            raise ValueError(f"not an archive-relative path: {relative!r}")
        path = Path(os.path.realpath(self.root / relative))
        if path == self.root or not path.is_relative_to(self.root):
            raise ValueError(f"path {relative!r} is outside the archive root")
        return path

    def statements(self) -> Any:
        """The compiled index statements for this store's dialect."""
        return statements(self._dialect)


def resolve_root(config: ArchiveConfig, config_dir: Path, data_dir: Path) -> Path:
    """``root`` relative to the config folder, default ``<data_dir>/archive``."""
    if config.root:
        return (Path(config_dir) / config.root).resolve()
    return (Path(data_dir) / "archive").resolve()


def build_archive(config: ArchiveConfig, ctx: BuildContext) -> Archive:
    """The filesystem archive of DICOM instances and HL7 messages."""
    root = resolve_root(config, ctx.config_dir, ctx.data_dir)
    return Archive(root, config, ctx.store, ctx.reactor, metrics=ctx.metrics)


def register(registry: Any) -> None:
    """Register the ``archive`` service."""
    registry.add("service", "archive", ArchiveServiceConfig, build_archive)
