"""Atomic placement: a final name only ever points at a complete file, whatever fails in between."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from archive import files
from archive.files import EXISTS, PLACED, REPLACED, place_file, sha256_file, write_atomic


def temp(tmp_path: Path, data: bytes, name: str = "t") -> Path:
    """A complete temp file in tmp_path/in."""
    p = tmp_path / "in" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    return p


def leftovers(folder: Path) -> list[str]:
    """Hidden temp files left in *folder*."""
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name] if folder.exists() else []


@pytest.mark.parametrize("policy", ["keep_first", "reject"])
def test_link_policies_never_touch_an_existing_file(tmp_path, policy):
    """keep_first and reject place a new file, then report an existing one and leave it unchanged."""
    final = tmp_path / "a" / "b" / "x.dcm"
    assert place_file(temp(tmp_path, b"first", "1"), final, policy=policy) == PLACED
    assert place_file(temp(tmp_path, b"second", "2"), final, policy=policy) == EXISTS
    assert final.read_bytes() == b"first"


def test_replace_overwrites(tmp_path):
    """replace places a new file, then replaces an existing one atomically and consumes the temp."""
    final = tmp_path / "x.dcm"
    assert place_file(temp(tmp_path, b"first", "1"), final, policy="replace") == PLACED
    t2 = temp(tmp_path, b"second", "2")
    assert place_file(t2, final, policy="replace") == REPLACED
    assert final.read_bytes() == b"second" and not t2.exists()


def test_unknown_policy_is_refused(tmp_path):
    """A policy other than the three is a programming error."""
    with pytest.raises(ValueError):
        place_file(temp(tmp_path, b"x"), tmp_path / "y", policy="overwrite")


def test_two_threads_placing_the_same_sop_keep_exactly_one(tmp_path):
    """Many threads racing to place one name with keep_first: exactly one wins, its bytes are the file."""
    final = tmp_path / "s" / "x.dcm"
    temps = [temp(tmp_path, f"copy {i}".encode() * 1000, str(i)) for i in range(16)]
    results: dict[int, str] = {}
    barrier = threading.Barrier(len(temps))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = place_file(temps[i], final, policy="keep_first", fsync=False)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(temps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == PLACED]
    assert len(winners) == 1
    assert final.read_bytes() == temps[winners[0]].read_bytes()


@pytest.mark.parametrize("policy", ["keep_first", "replace", "reject"])
@pytest.mark.parametrize("step", ["fsync_file", "link", "replace", "copy"])
def test_a_crash_between_steps_leaves_no_partial_final_file(tmp_path, monkeypatch, policy, step):
    """Raising at any step (fsync, link/rename, cross-device copy) leaves no final file and no temp copy."""
    final = tmp_path / "dst" / "x.dcm"
    data = b"data" * 10_000
    source = temp(tmp_path, data)

    def boom(*a, **k):
        raise OSError(5, "simulated crash")

    if step == "fsync_file":
        monkeypatch.setattr(files, "fsync_file", boom)
    elif step == "link":
        monkeypatch.setattr(os, "link", boom)
    elif step == "replace":
        monkeypatch.setattr(os, "replace", boom)
    else:
        monkeypatch.setattr(files, "same_filesystem", lambda a, b: False)
        monkeypatch.setattr(files.shutil, "copyfileobj", lambda src, dst, n: (dst.write(b"part"), boom()))
    try:
        place_file(source, final, policy=policy)
    except OSError:
        pass
    assert not final.exists() or final.read_bytes() == data
    assert leftovers(final.parent) == []
    if step in ("fsync_file", "copy") or (step == "link") == (policy != "replace"):
        assert not final.exists()


def test_a_failed_folder_fsync_after_link_removes_the_new_name(tmp_path, monkeypatch):
    """If the folder cannot be made durable after the link, the new name is taken back."""
    final = tmp_path / "dst" / "x.dcm"
    final.parent.mkdir()
    source = temp(tmp_path, b"data")

    def boom(directory):
        raise OSError(5, "simulated")

    monkeypatch.setattr(files, "fsync_dir", boom)
    with pytest.raises(OSError):
        place_file(source, final, policy="keep_first")
    assert not final.exists() and source.exists()


def test_fsync_order_is_file_then_rename_then_folder(tmp_path, monkeypatch):
    """The temp is fsynced before the final name appears, the folder after it."""
    calls: list[str] = []
    final = tmp_path / "dst" / "x.dcm"
    final.parent.mkdir()
    monkeypatch.setattr(files, "fsync_file", lambda p: calls.append(f"fsync_file exists={final.exists()}"))
    monkeypatch.setattr(files, "fsync_dir", lambda d: calls.append(f"fsync_dir exists={final.exists()}"))
    place_file(temp(tmp_path, b"x"), final, policy="keep_first")
    assert calls == ["fsync_file exists=False", "fsync_dir exists=True"]


def test_other_filesystem_is_copied_next_to_the_destination(tmp_path, monkeypatch):
    """A temp on another device is copied beside the final name first; no copy is left behind."""
    monkeypatch.setattr(files, "same_filesystem", lambda a, b: False)
    final = tmp_path / "dst" / "x.dcm"
    source = temp(tmp_path, b"payload")
    assert place_file(source, final, policy="keep_first") == PLACED
    assert final.read_bytes() == b"payload" and source.exists()
    assert leftovers(final.parent) == []
    assert place_file(source, final, policy="keep_first") == EXISTS
    assert leftovers(final.parent) == []


def test_write_atomic_replaces_and_cleans_up_on_failure(tmp_path, monkeypatch):
    """write_atomic creates folders, replaces an old file, and on a failed write leaves the old file and no temp."""
    path = tmp_path / "h" / "a" / "1.hl7"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"

    def boom(fd):
        raise OSError(28, "no space")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_atomic(path, b"three")
    assert path.read_bytes() == b"two" and leftovers(path.parent) == []


def test_sha256_file_streams_large_files(tmp_path):
    """The streamed checksum of a multi-chunk file equals hashlib's."""
    data = os.urandom(3 * files.CHUNK + 123)
    p = tmp_path / "big"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_prune_empty_dirs_stops_at_the_root(tmp_path):
    """Empty folders are removed up to, not including, the root; a non-empty one stops it."""
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "a" / "keep").write_text("x")
    files.prune_empty_dirs(tmp_path / "a" / "b" / "c", tmp_path)
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a").exists()
