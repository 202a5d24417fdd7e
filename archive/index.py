"""Index rows of the archive, written inside the engine's single store writer.

An op is ``op(cursor, stmts, message_id)`` on the writer's raw DBAPI cursor (SQLite or
PostgreSQL), in the same transaction as the ``dicom.stored`` message. Statements are compiled
once per dialect (like ``engine/store/hot.py``): upserts by ``patient_key``, ``study_uid`` and
``series_uid`` whose ``RETURNING`` tells the op what it needs, so a new instance costs five
statements (six when it opens a series). Values are normalised as ``archive/schema.py`` says.

Counts: a series' ``num_instances`` is incremented by its upsert; the upsert returning 1 means
the series got its first instance, which bumps the study's ``num_series`` and merges the
series' modality into ``modalities``. ``dicom_studies.received_at`` is when the study's
newest instance arrived (what retention reads); the other levels keep their first arrival.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite

from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies, hl7_archive
from engine.store.hot import HotStatement

STORED, KEPT, REPLACED, REJECTED = 0x0000, 0xB006, 0x0000, 0x0111
ONE = literal_column("1")  # a literal, not a bind parameter the op would have to fill


@dataclass(slots=True)
class StoredInstance:
    """One received instance as placed in the archive (what :func:`index_op` and the event need)."""

    outcome: str  # stored | duplicate_kept | replaced | duplicate_rejected
    status: int  # the C-STORE status to answer
    path: str  # relative to the archive root
    size: int
    sha256: str
    attrs: dict[str, str]  # keyword → value, for the event and the index columns
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    calling_ae: str
    channel: str
    policy: str = "keep_first"
    placed: bool = False  # this call put the file at ``path`` (discard may remove it)
    unsynced: bool = False  # placed with defer_sync and not yet flushed (Archive.sync)
    received_at: float = field(default_factory=time.time)
    levels: dict[str, str] = field(default_factory=dict)  # level → DICOM JSON of its attributes


@dataclass(slots=True)
class IndexResult:
    """What the index op did: ``inserted``, ``kept``, ``replaced`` or ``rejected``."""

    outcome: str
    status: int  # the C-STORE status to answer (may differ from the StoredInstance's)
    instance_id: int | None = None
    discard_file: bool = False  # the file this call placed is not what the index names: discard it


# -- normalisation --------------------------------------------------------------------------------
def norm_date(value: str | None) -> str | None:
    """``YYYYMMDD`` from a DA value (``YYYY.MM.DD`` accepted); None if empty or not a date."""
    if not value:
        return None
    v = value.split("\\", 1)[0].strip().replace(".", "").replace("-", "")
    return v if len(v) == 8 and v.isdigit() else None


def norm_time(value: str | None) -> str | None:
    """``HHMMSS.ffffff`` from a TM value, padded on the right (``1012`` → ``101200.000000``)."""
    if not value:
        return None
    v = value.split("\\", 1)[0].strip().replace(":", "")
    main, _, frac = v.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (frac and not frac.isdigit()):
        return None
    return main.ljust(6, "0") + "." + frac[:6].ljust(6, "0")


def norm_int(value: str | None) -> int | None:
    """An IS value as an int (first value; None if empty, invalid or out of 32-bit range)."""
    if not value:
        return None
    try:
        n = int(value.split("\\", 1)[0].strip())
    except ValueError:
        return None
    return n if -(2**31) <= n < 2**31 else None


def _cut(value: str | None, column: Any) -> str | None:
    """*value* cut to the column's length (PostgreSQL refuses longer strings); None when empty."""
    if not value:
        return None
    length = column.type.length
    return value[:length] if length and len(value) > length else value


def merge_modalities(current: str | None, modality: str | None) -> str:
    """``ModalitiesInStudy``: the sorted, backslash-joined set with *modality* added."""
    values = {m for m in (current or "").split("\\") if m}
    if modality:
        values.add(modality)
    return "\\".join(sorted(values))


def row_values(stored: StoredInstance) -> dict[str, Any]:
    """Every bind parameter the index statements take, normalised (computed outside the writer)."""
    a = stored.attrs
    lv = stored.levels
    pid = a.get("PatientID", "")[:64]
    issuer = a.get("IssuerOfPatientID", "")[:64]
    name = _cut(a.get("PatientName"), dicom_patients.c.patient_name)
    now = stored.received_at
    p, st, se, i = dicom_patients.c, dicom_studies.c, dicom_series.c, dicom_instances.c
    return {
        "patient_key": f"{pid}^{issuer}", "patient_id": pid, "issuer": issuer or None,
        "patient_name": name, "patient_name_upper": name.upper() if name else None,
        "birth_date": norm_date(a.get("PatientBirthDate")), "sex": _cut(a.get("PatientSex"), p.sex),
        "patient_attrs": lv.get("patient"), "now": now,
        "study_uid": stored.attrs["StudyInstanceUID"], "study_date": norm_date(a.get("StudyDate")),
        "study_time": norm_time(a.get("StudyTime")), "accession": _cut(a.get("AccessionNumber"), st.accession),
        "study_id": _cut(a.get("StudyID"), st.study_id), "study_description": _cut(a.get("StudyDescription"), st.description),
        "referring_physician": _cut(a.get("ReferringPhysicianName"), st.referring_physician),
        "study_attrs": lv.get("study"),
        "series_uid": stored.attrs["SeriesInstanceUID"], "modality": _cut(a.get("Modality"), se.modality),
        "series_number": norm_int(a.get("SeriesNumber")),
        "series_description": _cut(a.get("SeriesDescription"), se.description),
        "series_date": norm_date(a.get("SeriesDate")), "series_time": norm_time(a.get("SeriesTime")),
        "body_part": _cut(a.get("BodyPartExamined"), se.body_part), "station_name": _cut(a.get("StationName"), se.station_name),
        "series_attrs": lv.get("series"),
        "sop_uid": stored.sop_instance_uid, "sop_class_uid": stored.sop_class_uid,
        "instance_number": norm_int(a.get("InstanceNumber")), "transfer_syntax": stored.transfer_syntax,
        "path": stored.path, "size": stored.size, "sha256": stored.sha256,
        "calling_ae": _cut(stored.calling_ae, i.calling_ae), "channel": _cut(stored.channel, i.channel),
        "instance_attrs": lv.get("instance"),
    }  # fmt: skip


# -- statements -----------------------------------------------------------------------------------
def _upsert(mod: Any, table: Any, columns: dict[str, str], key: str, update: dict[str, Any], returning: tuple) -> Any:
    ins = mod.insert(table).values({col: bindparam(param) for col, param in columns.items()})
    set_ = {
        col: (value(table, ins.excluded) if callable(value) else ins.excluded[col]) for col, value in update.items()
    }
    return ins.on_conflict_do_update(index_elements=[table.c[key]], set_=set_).returning(*returning)


def _plus(column: str) -> Callable[[Any, Any], Any]:
    return lambda table, excluded: table.c[column] + excluded[column]


class IndexStatements:
    """The index statements compiled for one dialect."""

    def __init__(self, dialect: Any) -> None:
        engine = SimpleNamespace(dialect=dialect)
        mod = postgresql if dialect.name == "postgresql" else sqlite
        p, st, se, i = dicom_patients, dicom_studies, dicom_series, dicom_instances
        self.dialect = dialect
        self.find_instance = HotStatement(
            engine, select(i.c.id, i.c.series_ref, i.c.path).where(i.c.sop_uid == bindparam("sop_uid"))
        )
        pcols = {c: c for c in ("patient_key", "patient_id", "issuer", "patient_name", "patient_name_upper",
                                "birth_date", "sex")} | {"attrs": "patient_attrs", "created_at": "now", "updated_at": "now"}  # fmt: skip
        self.patient = HotStatement(
            engine,
            _upsert(mod, p, pcols, "patient_key",
                    dict.fromkeys(("patient_name", "patient_name_upper", "birth_date", "sex", "attrs", "updated_at"), None),
                    (p.c.id,)),
        )  # fmt: skip
        stcols = {"study_uid": "study_uid", "patient_ref": "patient_ref", "study_date": "study_date",
                  "study_time": "study_time", "accession": "accession", "study_id": "study_id",
                  "description": "study_description", "referring_physician": "referring_physician",
                  "num_series": "zero", "num_instances": "n", "attrs": "study_attrs", "received_at": "now",
                  "updated_at": "now"}  # fmt: skip
        # A study keeps the patient it was first stored under (or was merged into, ADT^A40): a late
        # instance carrying a merged PatientID does not move it back (dcm4chee-arc does the same).
        st_update: dict[str, Any] = dict.fromkeys(
            ("study_date", "study_time", "accession", "study_id", "description", "referring_physician",
             "attrs", "received_at", "updated_at"), None)  # fmt: skip
        st_update["num_instances"] = _plus("num_instances")
        self.study = HotStatement(engine, _upsert(mod, st, stcols, "study_uid", st_update, (st.c.id, st.c.modalities)))
        secols = {"series_uid": "series_uid", "study_ref": "study_ref", "modality": "modality",
                  "series_number": "series_number", "description": "series_description", "series_date": "series_date",
                  "series_time": "series_time", "body_part": "body_part", "station_name": "station_name",
                  "num_instances": "n", "attrs": "series_attrs", "received_at": "now", "updated_at": "now"}  # fmt: skip
        se_update: dict[str, Any] = dict.fromkeys(
            ("modality", "series_number", "description", "series_date", "series_time", "body_part", "station_name",
             "attrs", "updated_at"), None)  # fmt: skip
        se_update["num_instances"] = _plus("num_instances")
        self.series = HotStatement(
            engine, _upsert(mod, se, secols, "series_uid", se_update, (se.c.id, se.c.num_instances))
        )
        icols = {
            c: c
            for c in (
                "sop_uid",
                "series_ref",
                "study_uid",
                "sop_class_uid",
                "instance_number",
                "transfer_syntax",
                "path",
                "size",
                "sha256",
                "calling_ae",
                "channel",
                "message_id",
            )
        }
        icols |= {"received_at": "now", "attrs": "instance_attrs"}  # fmt: skip
        self.insert_instance = HotStatement(
            engine, i.insert().values({c: bindparam(v) for c, v in icols.items()}).returning(i.c.id)
        )
        ucols = {c: v for c, v in icols.items() if c != "sop_uid"}
        self.update_instance = HotStatement(
            engine,
            i.update().where(i.c.id == bindparam("instance_id")).values({c: bindparam(v) for c, v in ucols.items()}),
        )
        self.new_series = HotStatement(
            engine,
            st.update()
            .where(st.c.id == bindparam("study_ref"))
            .values(num_series=st.c.num_series + ONE, modalities=bindparam("modalities")),
        )
        self.move_out = HotStatement(
            engine,
            se.update()
            .where(se.c.id == bindparam("old_series"))
            .values(num_instances=se.c.num_instances - ONE)
            .returning(se.c.num_instances, se.c.study_ref),
        )
        self.study_less = HotStatement(
            engine,
            st.update()
            .where(st.c.id == bindparam("old_study"))
            .values(num_instances=st.c.num_instances - ONE, num_series=st.c.num_series - bindparam("gone")),
        )
        self.bump_series = HotStatement(
            engine,
            se.update()
            .where(se.c.id == bindparam("series_ref"))
            .values(num_instances=se.c.num_instances + ONE)
            .returning(se.c.num_instances),
        )
        self.bump_study = HotStatement(
            engine,
            st.update().where(st.c.id == bindparam("study_ref")).values(num_instances=st.c.num_instances + ONE),
        )
        self.hl7_update = HotStatement(
            engine,
            hl7_archive.update()
            .where(hl7_archive.c.message_id == bindparam("message_id"), hl7_archive.c.path == bindparam("path"))
            .values(channel=bindparam("channel"), control_id=bindparam("control_id"), size=bindparam("size"),
                    sha256=bindparam("sha256"), archived_at=bindparam("archived_at")),
        )  # fmt: skip
        hcols = ("message_id", "channel", "control_id", "path", "size", "sha256", "archived_at")
        self.hl7_insert = HotStatement(
            engine, hl7_archive.insert().values({c: bindparam(c) for c in hcols}).returning(hl7_archive.c.id)
        )


_compiled: dict[str, IndexStatements] = {}
_lock = threading.Lock()
_DIALECTS = {"sqlite": sqlite.dialect, "postgresql": lambda: __import__(
    "sqlalchemy.dialects.postgresql.psycopg", fromlist=["dialect"]).dialect()}  # fmt: skip


def statements(dialect: Any = None, cursor: Any = None) -> IndexStatements:
    """The compiled statements for *dialect* (a SQLAlchemy dialect or its name), or for *cursor*'s driver."""
    if dialect is None:
        dialect = "sqlite" if type(cursor).__module__.startswith("sqlite3") else "postgresql"
    name = dialect if isinstance(dialect, str) else dialect.name
    st = _compiled.get(name)
    if st is None:
        with _lock:
            st = _compiled.get(name)
            if st is None:
                st = _compiled[name] = IndexStatements(_DIALECTS[name]() if isinstance(dialect, str) else dialect)
    return st


def _one(cur: Any, stmt: HotStatement, values: dict[str, Any]) -> Any:
    cur.execute(stmt.sql, stmt.params(values))
    return cur.fetchone()


# -- the ops --------------------------------------------------------------------------------------
def index_op(stored: StoredInstance, dialect: Any = None) -> Callable[[Any, Any, int | None], IndexResult]:
    """The writer op recording *stored*: ``op(cursor, stmts, message_id) -> IndexResult``."""
    values = row_values(stored)

    def op(cur: Any, _stmts: Any = None, message_id: int | None = None) -> IndexResult:
        st = statements(dialect, cur)
        v = dict(values, message_id=message_id, zero=0)
        row = _one(cur, st.find_instance, v)
        if row is None:
            return _insert(cur, st, v, stored)
        instance_id, old_series, old_path = row
        if stored.placed and (stored.policy == "replace" or old_path == stored.path):
            _update(cur, st, v, int(instance_id), int(old_series))
            return IndexResult("replaced", REPLACED, int(instance_id))
        if stored.policy == "reject":
            return IndexResult("rejected", REJECTED, int(instance_id), discard_file=stored.placed)
        return IndexResult("kept", KEPT, int(instance_id), discard_file=stored.placed)

    return op


def _hierarchy(cur: Any, st: IndexStatements, v: dict[str, Any], n: int) -> tuple[int, str | None, int, int]:
    """Upsert patient, study and series (adding *n* instances); (study id, modalities, series id, its count)."""
    v["n"] = n
    v["patient_ref"] = int(_one(cur, st.patient, v)[0])
    study_ref, modalities = _one(cur, st.study, v)
    v["study_ref"] = int(study_ref)
    series_ref, count = _one(cur, st.series, v)
    v["series_ref"] = int(series_ref)
    return v["study_ref"], modalities, v["series_ref"], int(count)


def _opened_series(cur: Any, st: IndexStatements, v: dict[str, Any], modalities: str | None) -> None:
    v["modalities"] = merge_modalities(modalities, v["modality"])[:160] or None
    cur.execute(st.new_series.sql, st.new_series.params(v))


def _insert(cur: Any, st: IndexStatements, v: dict[str, Any], stored: StoredInstance) -> IndexResult:
    _, modalities, _, count = _hierarchy(cur, st, v, 1)
    instance_id = int(_one(cur, st.insert_instance, v)[0])
    if count == 1:
        _opened_series(cur, st, v, modalities)
    return IndexResult("inserted", stored.status, instance_id)


def _update(cur: Any, st: IndexStatements, v: dict[str, Any], instance_id: int, old_series: int) -> None:
    """A replaced instance: new attributes and file; counts move only if its series changed."""
    _, modalities, series_ref, _ = _hierarchy(cur, st, v, 0)
    v["instance_id"] = instance_id
    cur.execute(st.update_instance.sql, st.update_instance.params(v))
    if series_ref == old_series:
        return
    v["old_series"] = old_series
    left, old_study = _one(cur, st.move_out, v)
    v["old_study"], v["gone"] = int(old_study), 1 if int(left) == 0 else 0
    cur.execute(st.study_less.sql, st.study_less.params(v))
    (count,) = _one(cur, st.bump_series, v)
    cur.execute(st.bump_study.sql, st.bump_study.params(v))
    if int(count) == 1:
        _opened_series(cur, st, v, modalities)


def hl7_op(values: dict[str, Any], dialect: Any = None) -> Callable[[Any, Any], int]:
    """The writer op recording an archived HL7 file (one row per message and path; a redelivery updates it)."""

    def op(cur: Any, _stmts: Any = None) -> int:
        st = statements(dialect, cur)
        cur.execute(st.hl7_update.sql, st.hl7_update.params(values))
        if cur.rowcount and cur.rowcount > 0:
            return 0
        return int(_one(cur, st.hl7_insert, values)[0])

    return op
