"""C-FIND and retrieve over the archive index (PS3.4 C.4, C.6): identifier → SQLAlchemy Core, rows back.

:class:`Find` compiles a C-FIND request once (hierarchical search, Patient Root or Study Root) and
yields response rows as keyword → value mappings (``str``, ``int``, lists of them, lists of item
mappings for sequences, ``None`` for zero length). Keys with an index column are matched in SQL;
other keys are matched against the level's ``attrs`` (DICOM JSON) in Python, as is a PN column
without an upper-case copy when matching ignores case. :func:`locate` lists the instances a
C-MOVE/C-GET identifier selects. Neither imports pynetdicom; ``channels/dicom/qr.py`` does the DIMSE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Connection, Select, exists, func, select

from archive.matching import (
    IDENTIFIER_MISMATCH,
    Eq,
    Identifier,
    Key,
    QueryError,
    combined_range,
    json_strings,
    json_value,
    keyword_vr,
    match_items,
    match_values,
    parse_identifier,
    range_condition,
    sql_condition,
    trim_time,
)
from archive.paging import PagedQuery
from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
MODELS = {"patient": LEVELS, "study": LEVELS[1:]}
"""Levels of each information model (PS3.4 C.3.1, C.3.2), top first."""
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
TABLES = {"PATIENT": dicom_patients, "STUDY": dicom_studies, "SERIES": dicom_series, "IMAGE": dicom_instances}

COLUMNS: dict[str, tuple[str, str]] = {
    "PatientID": ("PATIENT", "patient_id"),
    "IssuerOfPatientID": ("PATIENT", "issuer"),
    "PatientName": ("PATIENT", "patient_name"),
    "PatientBirthDate": ("PATIENT", "birth_date"),
    "PatientSex": ("PATIENT", "sex"),
    "StudyInstanceUID": ("STUDY", "study_uid"),
    "StudyDate": ("STUDY", "study_date"),
    "StudyTime": ("STUDY", "study_time"),
    "AccessionNumber": ("STUDY", "accession"),
    "StudyID": ("STUDY", "study_id"),
    "StudyDescription": ("STUDY", "description"),
    "ReferringPhysicianName": ("STUDY", "referring_physician"),
    "SeriesInstanceUID": ("SERIES", "series_uid"),
    "Modality": ("SERIES", "modality"),
    "SeriesNumber": ("SERIES", "series_number"),
    "SeriesDescription": ("SERIES", "description"),
    "SeriesDate": ("SERIES", "series_date"),
    "SeriesTime": ("SERIES", "series_time"),
    "BodyPartExamined": ("SERIES", "body_part"),
    "StationName": ("SERIES", "station_name"),
    "SOPInstanceUID": ("IMAGE", "sop_uid"),
    "SOPClassUID": ("IMAGE", "sop_class_uid"),
    "InstanceNumber": ("IMAGE", "instance_number"),
    "AvailableTransferSyntaxUID": ("IMAGE", "transfer_syntax"),
}
"""Keys matched and returned from an index column: keyword → (level, column)."""
UPPER_COLUMNS = {"PatientName": "patient_name_upper"}
COMPUTED = {
    "NumberOfPatientRelatedStudies": "PATIENT",
    "NumberOfPatientRelatedSeries": "PATIENT",
    "NumberOfPatientRelatedInstances": "PATIENT",
    "NumberOfStudyRelatedSeries": "STUDY",
    "NumberOfStudyRelatedInstances": "STUDY",
    "NumberOfSeriesRelatedInstances": "SERIES",
    "ModalitiesInStudy": "STUDY",
}
"""Keys computed from the lower levels (PS3.4 C.3.4); the counts are return keys only."""
NOT_MATCHED = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC", "QueryRetrieveView"})
DATE_TIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"))
UTF8 = "ISO_IR 192"


class Located(NamedTuple):
    """One instance a retrieve selects: archive-relative path, SOP class, SOP instance, transfer syntax."""

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


def check_level(level: str | None, model: str) -> str:
    """The normalised Query/Retrieve Level, or :class:`QueryError` 0xA900 when *model* has no such level."""
    if model not in MODELS:
        raise ValueError(f"unknown information model {model!r}")
    name = (level or "").strip().upper()
    if name not in MODELS[model]:
        raise QueryError(IDENTIFIER_MISMATCH, f"QueryRetrieveLevel {name or '(none)'} not in this model", [0x00080052])
    return name


def unique_keys(level: str, model: str) -> tuple[str, ...]:
    """Unique keys of *level* and the levels above it in *model*, top first."""
    levels = MODELS[model]
    return tuple(UNIQUE[lvl] for lvl in levels[: levels.index(level) + 1])


def _require_unique(keys: Mapping[str, Key], required: tuple[str, ...]) -> None:
    for keyword in required:
        key = keys.get(keyword)
        if key is None or key.universal or not all(isinstance(t, Eq) for t in key.terms):
            tag = (keyword_vr(keyword) or (0, ""))[0]
            raise QueryError(IDENTIFIER_MISMATCH, f"{keyword} value required", [tag])


def _from_clause(level: str) -> Any:
    p, st, se, i = dicom_patients, dicom_studies, dicom_series, dicom_instances
    clause: Any = TABLES[level]
    depth = LEVELS.index(level)
    if depth >= 3:
        clause = clause.join(se, i.c.series_ref == se.c.id)
    if depth >= 2:
        clause = clause.join(st, se.c.study_ref == st.c.id)
    if depth >= 1:
        clause = clause.join(p, st.c.patient_ref == p.c.id)
    return clause


def _computed(keyword: str) -> Any:
    p, st, se = dicom_patients, dicom_studies, dicom_series
    st2, se2, i2 = dicom_studies.alias("st2"), dicom_series.alias("se2"), dicom_instances.alias("i2")
    count = select(func.count())
    query = {
        "NumberOfPatientRelatedStudies": count.select_from(st2).where(st2.c.patient_ref == p.c.id),
        "NumberOfPatientRelatedSeries": count.select_from(se2.join(st2, se2.c.study_ref == st2.c.id)).where(
            st2.c.patient_ref == p.c.id
        ),
        "NumberOfPatientRelatedInstances": count.select_from(i2.join(st2, i2.c.study_uid == st2.c.study_uid)).where(
            st2.c.patient_ref == p.c.id
        ),
        "NumberOfStudyRelatedSeries": count.select_from(se2).where(se2.c.study_ref == st.c.id),
        "NumberOfStudyRelatedInstances": count.select_from(i2).where(i2.c.study_uid == st.c.study_uid),
        "NumberOfSeriesRelatedInstances": count.select_from(i2).where(i2.c.series_ref == se.c.id),
    }[keyword]
    return query.scalar_subquery()


class Find(PagedQuery):
    """A compiled C-FIND request at one level; :meth:`rows` and :meth:`paged` yield the matches.

    Raises :class:`QueryError` (0xA900) for a level outside *model* or a missing unique key above the
    level (hierarchical search, C.4.1.2.1), and (0xC000) for a malformed date, time or number.
    *combined_datetime*: a StudyDate and StudyTime range of the same form match as one DT range
    (C.2.2.2.5.4; only when that extended negotiation was accepted).
    """

    def __init__(
        self,
        level: str,
        identifier: Identifier,
        *,
        model: str = "study",
        case_insensitive_pn: bool = True,
        combined_datetime: bool = False,
    ) -> None:
        self.level = check_level(level, model)
        self.model = model
        self.fold = case_insensitive_pn
        chain = LEVELS[: LEVELS.index(self.level) + 1]
        self._chain = chain[::-1]  # the query level first, then up
        keys = {k: v for k, v in parse_identifier(identifier).items() if k not in NOT_MATCHED}
        self._unique = unique_keys(self.level, model)
        _require_unique(keys, self._unique[:-1])
        for keyword in self._unique:
            keys.setdefault(keyword, Key(keyword, *(keyword_vr(keyword) or (0, ""))))
        self.keys = keys
        self.fetched = 0  # rows read from the database (matches plus rows the Python filters dropped)
        self._id = TABLES[self.level].c.id
        self._cols: list[Any] = [self._id.label("rid")]
        self._where: list[Any] = []
        self._filters: list[Callable[[Mapping[str, Any], dict[str, Any]], bool]] = []
        self._returns: list[tuple[str, Callable[[Mapping[str, Any], dict[str, Any]], Any]]] = []
        self._attrs = False
        self.uses_like = False
        matched = self._combine() if combined_datetime else set()
        for keyword, key in keys.items():
            self._plan(keyword, key, match=keyword not in matched)

    def _combine(self) -> set[str]:
        done: set[str] = set()
        for date_kw, time_kw in DATE_TIME_PAIRS:
            level, date_col = COLUMNS[date_kw]
            if level not in self._chain:
                continue
            rng = combined_range(self.keys.get(date_kw), self.keys.get(time_kw))
            if rng is None:
                continue
            table = TABLES[level]
            day, time = table.c[date_col], table.c[COLUMNS[time_kw][1]]
            self._where.append(range_condition(rng, day + time))
            self._where.append(time != "")
            if rng.low:
                self._where.append(day >= rng.low[:8])
            if rng.high:
                self._where.append(day <= rng.high[:8])
            done.update((date_kw, time_kw))
        return done

    def _plan(self, keyword: str, key: Key, *, match: bool) -> None:
        label = f"k{len(self._cols)}"
        if keyword in COMPUTED and COMPUTED[keyword] in self._chain:
            if keyword == "ModalitiesInStudy":
                se2 = dicom_series.alias("sm")
                cond = sql_condition(key, se2.c.modality)
                if cond is not None and match:
                    self._where.append(exists().where(se2.c.study_ref == dicom_studies.c.id, cond))
                    self.uses_like = True
                self._cols.append(dicom_studies.c.modalities.label(label))
                self._returns.append((keyword, lambda r, _c, n=label: multi_value(r[n])))
            else:
                self._cols.append(_computed(keyword).label(label))
                self._returns.append((keyword, lambda r, _c, n=label: r[n]))
            return
        if keyword in COLUMNS and COLUMNS[keyword][0] in self._chain:
            level, name = COLUMNS[keyword]
            column = TABLES[level].c[name]
            self._cols.append(column.label(label))
            if match and not key.universal:
                self._match_column(keyword, key, level, column, label)
            convert = trim_time if key.vr == "TM" else _empty_none
            self._returns.append((keyword, lambda r, _c, n=label, f=convert: f(r[n])))
            return
        if keyword in COLUMNS or keyword in COMPUTED:  # a key of a level below the query level: not matched
            self._returns.append((keyword, lambda _r, _c: None))
            return
        self._attrs = True
        if key.vr == "SQ":
            self._returns.append((keyword, lambda r, c, k=key: match_items(k, self._stored(r, c, k.tag), self.fold)))
            if not key.universal:
                self._filters.append(
                    lambda r, c, k=key: match_items(k, self._stored(r, c, k.tag), self.fold) is not None
                )
            return
        self._returns.append((keyword, lambda r, c, k=key: json_value(self._stored(r, c, k.tag))))
        if not key.universal:
            self._filters.append(lambda r, c, k=key: _match_json(k, self._stored(r, c, k.tag), self.fold))

    def _match_column(self, keyword: str, key: Key, level: str, column: Any, label: str) -> None:
        fold = self.fold and key.vr == "PN"
        if fold and keyword not in UPPER_COLUMNS:
            self._filters.append(lambda r, _c, n=label: match_values(key, [r[n] or ""], fold=True))
            return
        if fold:
            column = TABLES[level].c[UPPER_COLUMNS[keyword]]
        cond = sql_condition(key, column, fold=fold)
        if cond is not None:
            self._where.append(cond)
            self.uses_like = True

    def _stored(self, row: Mapping[str, Any], cache: dict[str, Any], tag: int) -> dict[str, Any] | None:
        """The DICOM JSON element *tag* from the first level's ``attrs`` (query level upward) holding it."""
        key = f"{tag:08X}"
        for level in self._chain:
            if level not in cache:
                text = row[f"attrs_{level}"]
                try:
                    cache[level] = json.loads(text) if text else {}
                except ValueError:
                    cache[level] = {}
            if key in cache[level]:
                return cache[level][key]
        return None

    def statement(self, *, after: int = 0, limit: int | None = None) -> Select:
        """The SELECT for rows with the level's id above *after*, in id order."""
        cols = list(self._cols)
        if self._attrs:
            cols += [TABLES[level].c.attrs.label(f"attrs_{level}") for level in self._chain]
        stmt = select(*cols).select_from(_from_clause(self.level)).where(*self._where)
        if after:
            stmt = stmt.where(self._id > after)
        stmt = stmt.order_by(self._id)
        return stmt.limit(limit) if limit is not None else stmt

    def _build(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        cache: dict[str, Any] = {}
        if not all(f(row, cache) for f in self._filters):
            return None
        out: dict[str, Any] = {"QueryRetrieveLevel": self.level}
        for keyword, get in self._returns:
            out[keyword] = get(row, cache)
        if any(non_ascii(v) for v in out.values()):
            out["SpecificCharacterSet"] = UTF8
        return out


def find(
    conn: Connection, level: str, identifier: Identifier, *, limit: int | None = None, **options: Any
) -> Iterator[dict[str, Any]]:
    """Rows matching a C-FIND *identifier* at *level* (options: those of :class:`Find`), streamed."""
    return Find(level, identifier, **options).rows(conn, limit=limit)


def locate(
    conn: Connection, level: str, identifier: Identifier, *, model: str = "study", limit: int | None = None
) -> list[Located]:
    """Instances a C-MOVE/C-GET *identifier* selects: unique keys at *level* and above (PS3.4 C.4.2.2.1).

    Each level's unique key needs a value (a list of UIDs at *level* itself); other keys are ignored.
    """
    level = check_level(level, model)
    keys = parse_identifier(identifier)
    required = unique_keys(level, model)
    _require_unique(keys, required)
    where = []
    for keyword in required:
        lvl, name = COLUMNS[keyword]
        where.append(sql_condition(keys[keyword], TABLES[lvl].c[name]))
    i, se = dicom_instances, dicom_series
    stmt = (
        select(i.c.path, i.c.sop_class_uid, i.c.sop_uid, i.c.transfer_syntax)
        .select_from(_from_clause("IMAGE"))
        .where(*where)
        .order_by(se.c.id, i.c.instance_number, i.c.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [Located(*row) for row in conn.execute(stmt)]


def _match_json(key: Key, element: dict[str, Any] | None, fold: bool) -> bool:
    return match_values(key, json_strings(element), fold=fold and key.vr == "PN")


def _empty_none(value: Any) -> Any:
    return None if value == "" else value


def multi_value(value: str | None) -> Any:
    if not value:
        return None
    parts = value.split("\\")
    return parts if len(parts) > 1 else parts[0]


def non_ascii(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii()
    if isinstance(value, list):
        return any(non_ascii(v) for v in value)
    if isinstance(value, dict):
        return any(non_ascii(v) for v in value.values())
    return False
