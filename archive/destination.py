"""The ``archive`` destination: each delivery's text as a file under the archive root, with an index row.

The file goes to ``hl7_layout`` (``hl7/{channel}/{date}/{message_id}.hl7``, date in UTC) via a
temp file, fsync and rename, on the connector's own small thread pool; then one ``hl7_archive``
row (path, size, SHA-256, message id, MSH-10) is written through the store's writer, and only
after that COMMIT is the delivery done. A redelivery of the same message rewrites the same
file and updates its row, so at-least-once delivery leaves one row per file.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from archive import files
from archive.index import hl7_op
from archive.layout import hl7_path
from engine.components import BuildContext, DeliveryError, DeliveryInfo, Done
from engine.config.models import ComponentConfig

log = logging.getLogger("radbridge.archive")


class ArchiveDestinationConfig(ComponentConfig):
    """Archive every delivery's text as a file under the archive root (``archive.hl7_layout``)."""

    type: Literal["archive"] = "archive"
    encoding: str = Field("utf-8", description="codec the text is written with")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


def control_id(content: str) -> str | None:
    """MSH-10 of an HL7 message (None for other content)."""
    if not content.startswith("MSH") or len(content) < 8:
        return None
    fields = content.split("\r", 1)[0].split("\n", 1)[0].split(content[3])
    return (fields[9][:64] or None) if len(fields) > 9 else None


class ArchiveDestination:
    """Destination connector writing into the archive."""

    def __init__(self, config: ArchiveDestinationConfig, ctx: BuildContext) -> None:
        if ctx.archive is None:
            raise RuntimeError("the archive destination needs the archive service (archive package)")
        self.archive = ctx.archive
        self.store = ctx.store
        self.reactor = ctx.reactor
        self.channel = ctx.channel
        self.component = ctx.component
        self.encoding = config.encoding
        self.layout = self.archive.config.hl7_layout
        self.now: Callable[[], float] = time.time
        self.run_blocking: Callable[..., defer.Deferred] | None = None  # tests run file I/O inline
        self._pool: ThreadPool | None = None

    def start(self) -> None:
        """Start the connector's thread pool."""
        if self.run_blocking is None and self._pool is None:
            self._pool = ThreadPool(0, 2, name=f"radbridge-archive-{self.channel}-{self.component}")
            self._pool.start()

    def stop(self) -> None:
        """Stop the thread pool (a write in progress finishes first)."""
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def _blocking(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        if self.run_blocking is not None:
            return self.run_blocking(f, *args)
        if self._pool is None:
            self.start()
        return threads.deferToThreadPool(self.reactor, self._pool, f, *args)

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Archive *content*; fires with None after COMMIT, errbacks with DeliveryError."""
        d: defer.Deferred = defer.Deferred()
        self.send_cb(content, info, lambda ok, value: d.callback(value) if ok else d.errback(value))
        return d

    def send_cb(self, content: str, info: DeliveryInfo, done: Done) -> None:
        """:meth:`send` with ``done(True, None)`` or ``done(False, DeliveryError)``."""
        try:
            data = content.encode(self.encoding)
        except UnicodeEncodeError as exc:
            done(False, DeliveryError(f"content cannot be encoded as {self.encoding}: {exc.reason}"))
            return
        now = self.now()
        try:
            rel = hl7_path(self.channel, info.message_id, datetime.fromtimestamp(now, UTC), self.layout)
            path = self.archive.abspath(rel)
        except ValueError as exc:
            done(False, DeliveryError(str(exc)))
            return
        values = {
            "message_id": info.message_id, "channel": self.channel, "control_id": control_id(content), "path": rel,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "archived_at": now,
        }  # fmt: skip

        def committed(ok: bool, value: Any) -> None:
            if ok:
                log.debug("archive %s.%s: message %s archived", self.channel, self.component, info.message_id)
                done(True, None)
            else:
                done(False, DeliveryError(f"cannot record archived message: {type(value).__name__}"))

        def written(_: Any) -> None:
            try:
                self.store.writer.submit_cb(hl7_op(values, self.store.engine.dialect), committed)
            except Exception as exc:  # noqa: BLE001 - reported as a failed attempt, retried by the queue
                done(False, DeliveryError(f"cannot record archived message: {type(exc).__name__}"))

        def failed(failure: Any) -> None:
            exc = failure.value
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            done(False, DeliveryError(f"cannot write {rel}: {reason}"))

        d = self._blocking(files.write_atomic, path, data, self.archive.fsync)
        d.addCallbacks(written, failed)


def register(registry: Any) -> None:
    """Register the ``archive`` destination."""
    registry.add("destination", "archive", ArchiveDestinationConfig, ArchiveDestination)
