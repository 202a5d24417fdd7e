"""The ``file_drop`` source: polls a folder for HL7 files, ingests every message, then files them away."""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from twisted.internet import defer, task

from engine.components import BuildContext, Sink
from engine.config.models import ComponentConfig, Duration
from engine.hl7.batch import split_messages

log = logging.getLogger("radbridge.channels.file")

OK_CODES = ("AA", "CA")


class FileDropConfig(ComponentConfig):
    """Poll a folder for HL7 files (single messages, batches or MLLP-framed)."""

    type: Literal["file_drop"] = "file_drop"
    path: str = Field(description="folder to poll; relative paths are resolved against the config file's folder")
    pattern: str = Field("*.hl7", description="glob the file names must match (dot-files are always ignored)")
    poll_interval: Duration = Field(1.0, gt=0, description="time between two scans of the folder")
    min_age: Duration = Field(
        1.0, description="skip files modified more recently than this, so half-written files are left alone"
    )
    done_dir: str | None = Field(
        None, description="where fully accepted files are moved (default: <path>/done); relative to the config folder"
    )
    create_dirs: bool = Field(True, description="create the folder at start when it is missing")
    error_dir: str | None = Field(
        None, description="where files with a rejected message or none at all are moved (default: <path>/error)"
    )


def unique_target(directory: Path, name: str) -> Path:
    """``directory/name``, or ``name.1``, ``name.2`` … when that name is taken."""
    target = directory / name
    n = 0
    while target.exists():
        n += 1
        target = directory / f"{name}.{n}"
    return target


class FileDrop:
    """Source polling a folder; a file is moved to done/ or error/ only once all its messages have a result."""

    def __init__(self, config: FileDropConfig, ctx: BuildContext) -> None:
        base = Path(ctx.config_dir)
        self.path = base / config.path
        self.done_dir = base / config.done_dir if config.done_dir else self.path / "done"
        self.error_dir = base / config.error_dir if config.error_dir else self.path / "error"
        self.pattern = config.pattern
        self.create_dirs = config.create_dirs
        self.poll_interval = config.poll_interval
        self.min_age = config.min_age
        self.channel = ctx.channel
        self.reactor = ctx.reactor
        self.sink: Sink | None = None
        self.now: Callable[[], float] = time.time
        self._loop: task.LoopingCall | None = None
        self._busy = False
        self._stopping = False
        self._waiters: list[defer.Deferred] = []
        self._missing_logged = False
        # Files whose messages all have results but whose move failed: (name, mtime_ns, size) -> target dir.
        self._unmoved: dict[tuple[str, int, int], Path] = {}

    def start(self, sink: Sink) -> None:
        """Start polling on the context's reactor."""
        self.sink = sink
        self._stopping = False
        if self.create_dirs:
            self.path.mkdir(parents=True, exist_ok=True)
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.reactor
        done = self._loop.start(self.poll_interval, now=True)
        done.addErrback(lambda f: log.error("file_drop %s: poll loop failed: %s", self.channel, f.getErrorMessage()))
        log.info("file_drop %s: polling %s every %ss", self.channel, self.path, self.poll_interval)

    def stop(self) -> defer.Deferred:
        """Stop polling; fires once the file being processed (if any) is finished."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if not self._busy:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    def candidates(self) -> list[os.DirEntry]:
        """Files ready to process, oldest modification time first."""
        cutoff = self.now() - self.min_age
        found = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not fnmatch.fnmatch(entry.name, self.pattern):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_mtime <= cutoff:
                    found.append((st.st_mtime_ns, entry.name, entry))
        found.sort(key=lambda item: item[:2])
        return [entry for _, _, entry in found]

    def poll(self) -> defer.Deferred:
        """One scan of the folder; never fails (errors are logged)."""
        if self._busy or self.sink is None:
            return defer.succeed(None)
        self._busy = True
        d = self._poll()
        d.addErrback(lambda f: log.error("file_drop %s: poll failed: %s", self.channel, f.getErrorMessage()))
        d.addBoth(self._idle)
        return d

    def _idle(self, _: Any) -> None:
        self._busy = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    @defer.inlineCallbacks
    def _poll(self) -> Any:
        try:
            entries = self.candidates()
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("file_drop %s: folder %s does not exist", self.channel, self.path)
                self._missing_logged = True
            return
        self._missing_logged = False
        names = {entry.name for entry in entries}
        self._unmoved = {key: target for key, target in self._unmoved.items() if key[0] in names}
        for entry in entries:
            if self._stopping:
                return
            go_on = yield self._process(entry)
            if not go_on:
                return

    @defer.inlineCallbacks
    def _process(self, entry: os.DirEntry) -> Any:
        """Ingest one file's messages in order, then move it; False stops this poll (store failure)."""
        name = entry.name
        path = Path(entry.path)
        try:
            st = path.stat()
            key = (name, st.st_mtime_ns, st.st_size)
            if key in self._unmoved:
                self._move(path, self._unmoved.pop(key), key)
                return True
            data = path.read_bytes()
        except OSError as exc:
            log.warning("file_drop %s: cannot read %s: %s", self.channel, name, exc.strerror)
            return True
        messages = split_messages(data)
        assert self.sink is not None
        if not messages:
            log.warning("file_drop %s: no HL7 message found in %s (%d bytes)", self.channel, name, len(data))
            try:
                yield self.sink.reject(data, f"file:{name}", "no HL7 message found in file")
            except Exception as exc:  # noqa: BLE001 - store failure: leave the file, retry next poll
                log.error("file_drop %s: could not record rejection of %s: %s", self.channel, name, exc)
                return False
            self._move(path, self.error_dir, key)
            return True
        failed = 0
        for index, raw in enumerate(messages, start=1):
            try:
                result = yield self.sink.ingest(raw, origin=f"file:{name}#{index}")
            except Exception as exc:  # noqa: BLE001 - store failure: leave the file, retry next poll
                log.error(
                    "file_drop %s: ingest of %s message %d/%d failed, file left in place: %s",
                    self.channel,
                    name,
                    index,
                    len(messages),
                    exc,
                )
                return False
            if result.code not in OK_CODES:
                failed += 1
        target = self.error_dir if failed else self.done_dir
        log.info(
            "file_drop %s: %s: %d message(s), %d rejected -> %s", self.channel, name, len(messages), failed, target.name
        )
        self._move(path, target, key)
        return True

    def _move(self, path: Path, directory: Path, key: tuple[str, int, int]) -> None:
        """Move *path* into *directory* without overwriting; remember the target if the move fails."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.replace(path, unique_target(directory, path.name))
        except OSError as exc:
            log.error("file_drop %s: cannot move %s to %s: %s", self.channel, path.name, directory, exc.strerror)
            self._unmoved[key] = directory
