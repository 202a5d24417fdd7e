"""Atomic file writes: temp file next to the target → fsync → ``os.replace`` → fsync of the folder.

Used by the archive (``archive.files``) and the ``file_writer`` destination.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entries to disk (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: Path, fsync: bool = True) -> None:
    """Create *directory* and its missing parents; with *fsync*, each new entry is made durable."""
    if directory.is_dir():
        return
    missing = []
    d = directory
    while not d.is_dir():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # another thread created it (and fsyncs its parent itself)
        if fsync:
            fsync_dir(d.parent)


def temp_name(final: Path) -> Path:
    """A fresh hidden temp name next to *final* (same folder, so same filesystem)."""
    return final.with_name(f".{final.name}.tmp-{secrets.token_hex(6)}")


def unlink_missing_ok(path: Path) -> None:
    """Delete *path*; nothing if it is already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_atomic(path: Path, data: bytes, fsync: bool = True, *, create_dirs: bool = True) -> None:
    """Write *data* to *path* via a temp file and ``os.replace`` (an old file replaced; missing folders
    created unless *create_dirs* is false); with *fsync* the file and its folder are flushed."""
    if create_dirs:
        ensure_dir(path.parent, fsync)
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink_missing_ok(tmp)
        raise
    if fsync:
        fsync_dir(path.parent)
