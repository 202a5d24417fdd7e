"""Modality Worklist C-FIND (IHE RAD-5, PS3.4 K.6.1) → one indexed query over ``ris_sps``; rows back.

:class:`Worklist` compiles a request identifier once, with the key parsing and matching helpers of
``archive/matching.py`` (PS3.4 C.2.2.2: universal, single value, UID lists, ``*``/``?`` wild cards,
DA/TM ranges, sequence matching), and yields response rows as keyword → value mappings for
``channels/dicom/mwl.py`` (``str``, lists of values, lists of item mappings, ``None`` for zero length).

* Keys with a ``ris_sps`` column are matched in SQL: the patient and order keys at the top level
  (:data:`TOP_COLUMNS`) and the Scheduled Procedure Step attributes inside
  ScheduledProcedureStepSequence (:data:`SPS_COLUMNS`); one row is one step, so a sequence key
  matches a row when all its item keys match (any-item semantics over the stored item for the
  keys without a column). Every other key is matched against ``ris_sps.item`` (the rendered
  worklist item, DICOM JSON) in Python.
* ScheduledStationAETitle is multi-valued (stored backslash-separated): any stored value matches.
* ScheduledProcedureStepStartDate and StartTime given as ranges of the same form match as one
  date-time range (PS3.4 C.2.2.2.5); otherwise each is matched on its own.
* An empty stored value never matches a non-universal key.
* Person names ignore case when *case_insensitive_pn* (against the upper-case copy, so the name
  index serves); every other VR is case-sensitive, on SQLite as on PostgreSQL.
* Without a ScheduledProcedureStepStatus value only open steps are returned: SPS status
  SCHEDULED, ARRIVED, READY or STARTED of an order in ``states.OPEN_ON_WORKLIST``. With one, the
  status decides, and steps of HELD orders are still left out.
* Only requested keys come back: from the columns, else from the item, else zero length; a
  response with non-ASCII text declares Specific Character Set ``ISO_IR 192``.

Nothing here imports pynetdicom. Column values are in the normal form of ``ris_core/schema.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, exists, or_, select

from archive.matching import (
    ESCAPE,
    Eq,
    Identifier,
    Key,
    Like,
    combined_range,
    json_strings,
    json_value,
    keyword_vr,
    like_pattern,
    match_items,
    match_values,
    parse_identifier,
    range_condition,
    sql_condition,
    trim_time,
)

# Private helpers of the archive's C-FIND, reused so both behave the same (see the issue note).
from archive.paging import PagedQuery
from archive.query import multi_value, non_ascii
from ris_core.schema import ris_orders, ris_sps
from ris_core.states import HELD, OPEN_ON_WORKLIST

SPS = "ScheduledProcedureStepSequence"
OPEN_SPS_STATUSES = ("SCHEDULED", "ARRIVED", "READY", "STARTED")
UTF8 = "ISO_IR 192"

TOP_COLUMNS = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer",
    "PatientName": "patient_name",
    "AccessionNumber": "accession",
    "RequestedProcedureID": "requested_procedure_id",
    "StudyInstanceUID": "study_uid",
}
"""Top-level keys matched and returned from a ``ris_sps`` column."""
SPS_COLUMNS = {
    "Modality": "modality",
    "ScheduledStationAETitle": "station_ae",
    "ScheduledStationName": "station_name",
    "ScheduledProcedureStepStartDate": "start_date",
    "ScheduledProcedureStepStartTime": "start_time",
    "ScheduledProcedureStepDescription": "description",
    "ScheduledPerformingPhysicianName": "performing_physician",
    "ScheduledProcedureStepStatus": "status",
    "ScheduledProcedureStepID": "sps_id",
}
"""ScheduledProcedureStepSequence item keys matched and returned from a ``ris_sps`` column."""
UPPER_COLUMNS = {"patient_name": "patient_name_upper"}
MULTI_VALUED = frozenset({"station_ae"})
INDEXED = frozenset({"accession", "patient_id", "patient_name_upper", "modality", "start_date"})
NOT_MATCHED = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel", "TimezoneOffsetFromUTC"})
DATE, TIME = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"

Row = Mapping[str, Any]
Cache = dict[str, Any]

# Statement parts every query shares, built once (SQLAlchemy elements are immutable).
_RID = ris_sps.c.id.label("rid")
_LABELLED = {c.name: c.label(f"c_{c.name}") for c in ris_sps.columns}
_OPEN_INDEXED = ris_sps.c.status.in_(OPEN_SPS_STATUSES)
_OPEN_UNINDEXED = ris_sps.c.status.concat("").in_(OPEN_SPS_STATUSES)
_OPEN_ORDER = exists().where(ris_orders.c.id == ris_sps.c.order_ref, ris_orders.c.state.in_(OPEN_ON_WORKLIST))
_NOT_HELD = exists().where(ris_orders.c.id == ris_sps.c.order_ref, ris_orders.c.state != HELD)


class Worklist(PagedQuery):
    """A compiled Modality Worklist request; :meth:`rows` and :meth:`paged` yield the matching steps.

    Raises :class:`archive.matching.QueryError` (0xA900 for a sequence key with several items,
    0xC000 for a malformed date or time) when the identifier is parsed.
    """

    def __init__(self, identifier: Identifier, *, case_insensitive_pn: bool = True) -> None:
        self.fold = case_insensitive_pn
        self.keys = {k: v for k, v in parse_identifier(identifier).items() if k not in NOT_MATCHED}
        self.fetched = 0  # rows read from the database (matches plus rows the Python filters dropped)
        self.uses_like = False
        self._cols: list[Any] = [_RID]
        self._labels: set[str] = set()
        self._where: list[Any] = []
        self._indexed = False  # a condition on an indexed column other than the status
        self._filters: list[Callable[[Row, Cache], bool]] = []
        self._returns: list[tuple[str, Callable[[Row, Cache], Any]]] = []
        self._item = False
        status_asked = False
        for keyword, key in self.keys.items():
            if keyword == SPS:
                status_asked = self._plan_sps(key)
            elif keyword in TOP_COLUMNS:
                self._returns.append((keyword, self._column(key, TOP_COLUMNS[keyword])))
            else:
                self._plan_item(keyword, key)
        self._where.extend(self._open_steps(status_asked))

    # -- planning ------------------------------------------------------------
    def _column(self, key: Key, name: str, *, match: bool = True) -> Callable[[Row, Cache], Any]:
        """Select column *name*, match *key* on it, and return the getter of its response value."""
        label = f"c_{name}"
        if label not in self._labels:
            self._labels.add(label)
            self._cols.append(_LABELLED[name])
        if match and not key.universal:
            self._match_column(key, name, label)
        if name in MULTI_VALUED:
            return lambda r, _c, n=label: multi_value(r[n])
        if key.vr == "TM":
            return lambda r, _c, n=label: trim_time(r[n])
        return lambda r, _c, n=label: r[n] if r[n] != "" else None

    def _match_column(self, key: Key, name: str, label: str) -> None:
        column = ris_sps.c[name]
        fold = self.fold and key.vr == "PN"
        if name in MULTI_VALUED:
            # SQL keeps the rows holding a match somewhere in the string; Python checks each value.
            self._where.append(or_(*(column.like(f"%{_pattern(t)}%", escape=ESCAPE) for t in key.terms)))
            self._filters.append(lambda r, _c, n=label: match_values(key, (r[n] or "").split("\\")))
            self.uses_like = True
            return
        if fold and name not in UPPER_COLUMNS:
            self._filters.append(lambda r, _c, n=label: match_values(key, [r[n] or ""], fold=True))
            return
        if fold:
            name = UPPER_COLUMNS[name]
            column = ris_sps.c[name]
        cond = sql_condition(key, column, fold=fold)
        if cond is not None:
            self._where.append(cond)
            self._indexed = self._indexed or name in INDEXED
            self.uses_like = self.uses_like or any(isinstance(t, Like) for t in key.terms)

    def _plan_sps(self, key: Key) -> bool:
        """Plan ScheduledProcedureStepSequence; True when it asks for a ScheduledProcedureStepStatus."""
        if key.items is None:  # an empty sequence: return each step whole
            getters = {kw: self._column(_universal(kw), col) for kw, col in SPS_COLUMNS.items()}
            self._item = True
            self._returns.append(
                (SPS, lambda r, c: [{**_first_item(self._stored(r, c, key.tag)), **_apply(getters, r, c)}])
            )
            return False
        items = key.items
        combined = self._combine(items.get(DATE), items.get(TIME))
        getters = {}
        for kw, sub in items.items():
            if kw in SPS_COLUMNS:
                getters[kw] = self._column(sub, SPS_COLUMNS[kw], match=not combined or kw not in (DATE, TIME))
        rest = {kw: sub for kw, sub in items.items() if kw not in SPS_COLUMNS}
        rest_key = Key(key.keyword, key.tag, key.vr, items=rest)
        if rest:
            self._item = True
            if not rest_key.universal:
                self._filters.append(lambda r, c: self._sps_items(r, c, rest_key) is not None)

        def value(r: Row, c: Cache) -> list[dict[str, Any]]:
            matched = self._sps_items(r, c, rest_key) if rest else None
            item = matched[0] if matched else dict.fromkeys(rest)
            return [{**item, **_apply(getters, r, c)}]

        self._returns.append((SPS, value))
        status = items.get("ScheduledProcedureStepStatus")
        return status is not None and not status.universal

    def _combine(self, date: Key | None, time: Key | None) -> bool:
        """Match a StartDate and StartTime range of the same form as one date-time range (C.2.2.2.5)."""
        rng = combined_range(date, time)
        if rng is None:
            return False
        day, tm = ris_sps.c.start_date, ris_sps.c.start_time
        self._where.extend([range_condition(rng, day + tm), tm != ""])
        if rng.low:
            self._where.append(day >= rng.low[:8])
        if rng.high:
            self._where.append(day <= rng.high[:8])
        self._indexed = True
        return True

    def _plan_item(self, keyword: str, key: Key) -> None:
        """A key without a column: matched and returned from the rendered item (DICOM JSON)."""
        self._item = True
        if key.vr == "SQ":
            self._returns.append((keyword, lambda r, c: match_items(key, self._stored(r, c, key.tag), self.fold)))
            if not key.universal:
                self._filters.append(lambda r, c: match_items(key, self._stored(r, c, key.tag), self.fold) is not None)
            return
        self._returns.append((keyword, lambda r, c: json_value(self._stored(r, c, key.tag))))
        if not key.universal:
            fold = self.fold and key.vr == "PN"
            self._filters.append(lambda r, c: match_values(key, json_strings(self._stored(r, c, key.tag)), fold=fold))

    def _open_steps(self, status_asked: bool) -> list[ColumnElement[bool]]:
        """Only open steps of open orders, unless a status was asked for (held orders never)."""
        if status_asked:
            return [_NOT_HELD]
        # With another indexed key the status index would be the planner's worse choice: hide it.
        return [_OPEN_UNINDEXED if self._indexed else _OPEN_INDEXED, _OPEN_ORDER]

    # -- stored item -----------------------------------------------------------
    def _stored(self, row: Row, cache: Cache, tag: int) -> dict[str, Any] | None:
        """The top-level DICOM JSON element *tag* of the row's rendered item."""
        if "item" not in cache:
            try:
                cache["item"] = json.loads(row["item"]) if row["item"] else {}
            except ValueError:
                cache["item"] = {}
        return cache["item"].get(f"{tag:08X}")

    def _sps_items(self, row: Row, cache: Cache, key: Key) -> list[dict[str, Any]] | None:
        if "sps" not in cache:
            cache["sps"] = match_items(key, self._stored(row, cache, key.tag), self.fold)
        return cache["sps"]

    # -- reading -----------------------------------------------------------------
    def statement(self, *, after: int = 0, limit: int | None = None) -> Select:
        """The SELECT for steps with an id above *after*, in id order."""
        cols = [*self._cols, ris_sps.c.item.label("item")] if self._item else self._cols
        stmt = select(*cols).where(*self._where)
        if after:
            stmt = stmt.where(ris_sps.c.id > after)
        stmt = stmt.order_by(ris_sps.c.id)
        return stmt.limit(limit) if limit is not None else stmt

    def _build(self, row: Row) -> dict[str, Any] | None:
        cache: Cache = {}
        if not all(f(row, cache) for f in self._filters):
            return None
        out = {keyword: get(row, cache) for keyword, get in self._returns}
        if any(non_ascii(v) for v in out.values()):
            out = {"SpecificCharacterSet": UTF8, **out}
        return out


def find(
    conn: Connection, identifier: Identifier, *, case_insensitive_pn: bool = True, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Worklist rows matching a C-FIND *identifier*, streamed from *conn* (QueryError raised here)."""
    return Worklist(identifier, case_insensitive_pn=case_insensitive_pn).rows(conn, limit=limit)


def paged(
    read: Callable[..., Any],
    identifier: Identifier,
    *,
    case_insensitive_pn: bool = True,
    limit: int | None = None,
    page_size: int = 256,
) -> Iterator[dict[str, Any]]:
    """Like :func:`find` with one short connection per page (``read`` is ``store.read_sync``)."""
    query = Worklist(identifier, case_insensitive_pn=case_insensitive_pn)
    return query.paged(read, page_size=page_size, limit=limit)


def _pattern(term: Any) -> str:
    """The LIKE pattern (escaped) of an Eq or Like term, for a substring pre-filter."""
    return like_pattern(term.value if isinstance(term, Eq) else term.pattern)


def _universal(keyword: str) -> Key:
    tag, vr = keyword_vr(keyword) or (0, "")
    return Key(keyword, tag, vr)


def _apply(getters: Mapping[str, Callable[[Row, Cache], Any]], row: Row, cache: Cache) -> dict[str, Any]:
    return {kw: get(row, cache) for kw, get in getters.items()}


def _first_item(element: Mapping[str, Any] | None) -> dict[str, Any]:
    """The first stored item of a sequence element as keyword → value (empty when there is none)."""
    items = json_value(element) if element else None
    return dict(items[0]) if items else {}


__all__ = ["OPEN_SPS_STATUSES", "SPS_COLUMNS", "TOP_COLUMNS", "Worklist", "find", "paged"]
