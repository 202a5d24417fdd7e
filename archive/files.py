"""Atomic file placement: temp → fsync → link or rename → fsync the folder.

A final name only ever points at a complete, fsynced file: data is written (or copied) to a
temporary name first, and the final name appears by ``os.link`` (``keep_first``/``reject``:
atomic create-if-absent, so two associations storing the same SOP Instance keep exactly one)
or ``os.replace`` (``replace``). A crash at any step leaves at most a temp file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Literal

from engine.fileio import ensure_dir, fsync_dir, temp_name, unlink_missing_ok, write_atomic  # noqa: F401 - write_atomic: archive.files API

Policy = Literal["keep_first", "replace", "reject"]
POLICIES: tuple[str, ...] = ("keep_first", "replace", "reject")
PLACED, EXISTS, REPLACED = "placed", "exists", "replaced"
CHUNK = 1 << 20  # 1 MiB


def fsync_file(path: Path) -> None:
    """Flush a file's data (and the size needed to read it back) to disk.

    ``fdatasync`` where the platform has it, as SQLite does: it skips timestamps and other
    metadata a reader does not need, about 0.1 ms less per instance than ``fsync`` here.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        getattr(os, "fdatasync", os.fsync)(fd)
    finally:
        os.close(fd)


def copy_next_to(source: Path, final: Path, fsync: bool = True) -> Path:
    """Copy *source* to a temp file in *final*'s folder (fsynced); the caller links or renames it."""
    tmp = temp_name(final)
    try:
        with open(source, "rb") as src, open(tmp, "xb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
            dst.flush()
            if fsync:
                os.fsync(dst.fileno())
    except BaseException:
        unlink_missing_ok(tmp)
        raise
    return tmp


def same_filesystem(a: Path, b: Path) -> bool:
    """True when *a* and *b* are on one device (a hard link or rename between them works)."""
    return os.stat(a).st_dev == os.stat(b).st_dev


def place_file(temp: Path, final: Path, *, policy: str, fsync: bool = True) -> str:
    """Put the complete file *temp* at *final* per *policy*: ``placed``, ``exists`` or ``replaced``.

    ``keep_first`` and ``reject`` never touch an existing *final* (``exists``: nothing changed);
    ``replace`` overwrites it atomically. After a link *temp* is still there for the caller to
    remove; after a rename it is gone. On another filesystem *temp* is first copied next to
    *final*. An exception leaves *final* as it was.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}")
    directory = final.parent
    ensure_dir(directory, fsync)
    source, copied = temp, None
    if not same_filesystem(temp, directory):
        source = copied = copy_next_to(temp, final, fsync)
    elif fsync:
        fsync_file(temp)
    try:
        if policy == "replace":
            existed = os.path.lexists(final)
            os.replace(source, final)
            result = REPLACED if existed else PLACED
        else:
            try:
                os.link(source, final)
            except FileExistsError:
                return EXISTS
            if fsync:
                try:
                    fsync_dir(directory)
                except BaseException:
                    unlink_missing_ok(final)  # the name is ours and not durable: take it back
                    raise
            return PLACED
        if fsync:
            fsync_dir(directory)
        return result
    finally:
        if copied is not None:
            unlink_missing_ok(copied)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file as hex, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def remove_file(path: Path, fsync: bool = True) -> bool:
    """Delete *path* if it exists (folder fsynced); True when something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if fsync:
        fsync_dir(path.parent)
    return True


def prune_empty_dirs(start: Path, stop: Path) -> None:
    """Remove *start* and its parents while they are empty, never *stop* or above."""
    d = start
    while d != stop and stop in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
