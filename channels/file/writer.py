"""The ``file_writer`` destination: writes each delivery atomically to a file in a folder."""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from twisted.internet import defer, threads
from twisted.python.failure import Failure

from engine.components import BuildContext, DeliveryError, DeliveryInfo
from engine.config.models import ComponentConfig
from engine.fileio import write_atomic

log = logging.getLogger("radbridge.channels.file")

PLACEHOLDERS = ("message_id", "delivery_id", "timestamp", "date")
SEPARATORS = {"cr": "\r", "lf": "\n", "crlf": "\r\n"}
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class FileWriterConfig(ComponentConfig):
    """Write every delivery to its own file, atomically."""

    type: Literal["file_writer"] = "file_writer"
    directory: str = Field(description="folder to write to; relative paths are resolved against the config folder")
    filename: str = Field(
        "{message_id}-{delivery_id}.hl7",
        description=(
            "file name template with {message_id}, {delivery_id}, {timestamp} (YYYYMMDDHHMMSSffffff, local time) "
            "and {date} (YYYYMMDD); a redelivery overwrites its earlier file only when the name has no time in it; "
            "path separators are replaced by _"
        ),
    )
    encoding: str = Field("utf-8", description="codec the content is encoded with")
    segment_separator: Literal["cr", "lf", "crlf"] = Field(
        "cr", description="line ending written between segments: cr (HL7 standard), lf or crlf"
    )
    create_dirs: bool = Field(True, description="create the folder (and its parents) when it is missing")

    @field_validator("filename")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        unknown = sorted({m for m in _PLACEHOLDER_RE.findall(value) if m not in PLACEHOLDERS})
        if unknown:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} (known: {known})")
        if not value.strip():
            raise ValueError("filename must not be empty")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


def sanitize_filename(name: str) -> str:
    """Make *name* a plain file name: path separators and NUL become ``_``, ``.``/``..`` are defused."""
    for sep in ("/", "\\", "\0"):
        name = name.replace(sep, "_")
    if name.strip(".") == "":
        name = "_" * max(1, len(name))
    return name


def render_filename(template: str, info: DeliveryInfo, now: datetime) -> str:
    """Substitute the placeholders of *template* for *info* at time *now* and sanitise the result."""
    values = {
        "message_id": str(info.message_id),
        "delivery_id": str(info.delivery_id),
        "timestamp": now.strftime("%Y%m%d%H%M%S%f"),
        "date": now.strftime("%Y%m%d"),
    }
    return sanitize_filename(_PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template))


class FileWriter:
    """Destination writing each delivery to ``directory/filename``; idempotent on redelivery."""

    def __init__(self, config: FileWriterConfig, ctx: BuildContext) -> None:
        self.directory = Path(ctx.config_dir) / config.directory
        self.template = config.filename
        self.encoding = config.encoding
        self.separator = SEPARATORS[config.segment_separator]
        self.create_dirs = config.create_dirs
        self.channel = ctx.channel
        self.component = ctx.component
        self.reactor = ctx.reactor
        self.now: Callable[[], datetime] = datetime.now

    def start(self) -> None:
        """Nothing to open; the folder is created on the first write."""

    def stop(self) -> None:
        """Nothing to close."""

    def _defer_to_thread(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run the blocking *f* on the reactor's thread pool."""
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def encode(self, content: str) -> bytes:
        """The bytes written for *content*: segments joined by the configured separator, then encoded."""
        text = content.replace("\r\n", "\r")
        if self.separator != "\r":
            text = text.replace("\r", self.separator)
        return text.encode(self.encoding)

    def _write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, create_dirs=self.create_dirs)

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Write *content* atomically; fires with None, errbacks with DeliveryError."""
        name = render_filename(self.template, info, self.now())
        try:
            data = self.encode(content)
        except UnicodeEncodeError as exc:
            return defer.fail(DeliveryError(f"content cannot be encoded as {self.encoding}: {exc.reason}"))
        path = self.directory / name

        def done(_: Any) -> None:
            log.debug("file_writer %s.%s: wrote %s (%d bytes)", self.channel, self.component, name, len(data))

        def failed(failure: Failure) -> None:
            exc = failure.value
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DeliveryError(f"cannot write {name} in {self.directory}: {reason}")

        d = defer.maybeDeferred(self._defer_to_thread, self._write, path, data)
        return d.addCallbacks(done, failed)
