"""Recheck the archive against its index: every row's file exists with its size and SHA-256.

Rows are read in pages by id, each page on its own short read connection, so a verify of a
large archive never holds a transaction (let alone a write lock) while it hashes files. With
``orphans``, the files under the root are walked folder by folder and each is looked up by an
indexed key: a DICOM file by the SOP Instance UID in its header, an HL7 file by the message id
its ``hl7_layout`` path carries; a file no row names, or that its row places elsewhere, is an
orphan. ``.incoming`` (temp files of associations in progress) is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from archive import files
from archive.header import InvalidInstance, scan_header
from archive.layout import INCOMING, hl7_pattern
from archive.schema import dicom_instances, hl7_archive

PAGE = 500


@dataclass
class Problem:
    """One thing wrong: ``missing``, ``corrupt`` or ``orphan``."""

    kind: str
    what: str  # instance | hl7 | file
    path: str
    detail: str = ""
    key: str = ""  # SOP Instance UID or message id (never PHI)


@dataclass
class VerifyReport:
    """Counts and problems of one verify run."""

    instances: int = 0
    hl7: int = 0
    bytes: int = 0
    scanned: int = 0  # files looked at by the orphan scan
    problems: list[Problem] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many problems of *kind*."""
        return sum(1 for p in self.problems if p.kind == kind)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "instances": self.instances, "hl7": self.hl7, "bytes": self.bytes, "scanned": self.scanned,
            "missing": self.count("missing"), "corrupt": self.count("corrupt"), "orphans": self.count("orphan"),
            "problems": [asdict(p) for p in self.problems],
        }  # fmt: skip


def _safe_join(root: Path, rel: str) -> Path | None:
    if not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        return None
    return root / rel


def check_file(root: Path, rel: str, size: int, sha256: str) -> tuple[str, str] | None:
    """``(kind, detail)`` when the file at *rel* is missing or differs from its row, else None."""
    path = _safe_join(root, rel)
    if path is None:
        return "corrupt", "unsafe path in the index"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", "no such file"
    except OSError as exc:
        return "corrupt", f"cannot stat: {exc.strerror}"
    if not os.path.isfile(path):
        return "corrupt", "not a regular file"
    if st.st_size != size:
        return "corrupt", f"size {st.st_size}, index says {size}"
    try:
        actual = files.sha256_file(path)
    except OSError as exc:
        return "corrupt", f"cannot read: {exc.strerror}"
    if actual != sha256:
        return "corrupt", "SHA-256 differs from the index"
    return None


def _pages(store: Any, table: Any, columns: list[Any]) -> Iterator[list[Any]]:
    last = 0
    while True:
        stmt = select(table.c.id, *columns).where(table.c.id > last).order_by(table.c.id).limit(PAGE)
        rows = store.read_sync(lambda conn, s=stmt: conn.execute(s).all())
        if not rows:
            return
        yield rows
        last = rows[-1].id


def verify(
    store: Any,
    root: Path,
    *,
    hl7_layout: str,
    orphans: bool = False,
    on_problem: Callable[[Problem], None] | None = None,
) -> VerifyReport:
    """Check every indexed instance and HL7 file (and with *orphans* every file under *root*)."""
    root = Path(root)
    report = VerifyReport()

    def found(problem: Problem) -> None:
        report.problems.append(problem)
        if on_problem is not None:
            on_problem(problem)

    i, h = dicom_instances, hl7_archive
    for rows in _pages(store, i, [i.c.sop_uid, i.c.path, i.c.size, i.c.sha256]):
        for r in rows:
            report.instances += 1
            report.bytes += int(r.size)
            bad = check_file(root, r.path, int(r.size), r.sha256)
            if bad:
                found(Problem(bad[0], "instance", r.path, bad[1], r.sop_uid))
    for rows in _pages(store, h, [h.c.message_id, h.c.path, h.c.size, h.c.sha256]):
        for r in rows:
            report.hl7 += 1
            report.bytes += int(r.size)
            bad = check_file(root, r.path, int(r.size), r.sha256)
            if bad:
                found(Problem(bad[0], "hl7", r.path, bad[1], str(r.message_id)))
    if orphans:
        scan_orphans(store, root, hl7_layout, report, found)
    return report


def scan_orphans(store: Any, root: Path, hl7_layout: str, report: VerifyReport, found: Callable) -> None:
    """Walk *root* folder by folder; report files no index row names."""
    pattern = hl7_pattern(hl7_layout)
    for folder, dirs, names in os.walk(root):
        if Path(folder) == root and INCOMING in dirs:
            dirs.remove(INCOMING)
        dirs.sort()
        rels = sorted(Path(folder, n).relative_to(root).as_posix() for n in names)
        for start in range(0, len(rels), PAGE):
            _check_batch(store, root, rels[start : start + PAGE], pattern, report, found)


def _check_batch(store: Any, root: Path, rels: list[str], pattern: Any, report: VerifyReport, found: Callable) -> None:
    hl7: dict[str, int] = {}
    dicom: dict[str, str] = {}
    for rel in rels:
        report.scanned += 1
        m = pattern.match(rel)
        if m:
            hl7[rel] = int(m.group("message_id"))
            continue
        try:
            uid = scan_header(root / rel).attrs.get("SOPInstanceUID", "")
        except (InvalidInstance, OSError):
            uid = ""
        if uid:
            dicom[rel] = uid
        else:
            found(Problem("orphan", "file", rel, "not DICOM and not an archived HL7 path"))
    if hl7:
        ids = sorted(set(hl7.values()))
        q = select(hl7_archive.c.message_id, hl7_archive.c.path).where(hl7_archive.c.message_id.in_(ids))
        known = {(int(r.message_id), r.path) for r in store.read_sync(lambda conn: conn.execute(q).all())}
        for rel, mid in hl7.items():
            if (mid, rel) not in known:
                found(Problem("orphan", "file", rel, "no hl7_archive row names it", str(mid)))
    if dicom:
        i = dicom_instances
        q = select(i.c.sop_uid, i.c.path).where(i.c.sop_uid.in_(sorted(set(dicom.values()))))
        known_paths = {r.sop_uid: r.path for r in store.read_sync(lambda conn: conn.execute(q).all())}
        for rel, uid in dicom.items():
            if known_paths.get(uid) != rel:
                why = "not indexed" if uid not in known_paths else "its instance is indexed at another path"
                found(Problem("orphan", "file", rel, why, uid))
