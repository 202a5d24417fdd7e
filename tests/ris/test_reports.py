"""Reports (ORU^R01) in the RIS: P/F/C transitions, every version kept, refusals, idempotent re-delivery."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine.store.store import Store
from ris_core import orders
from ris_core.config import CompiledRis
from ris_core.hl7in import Rejected
from ris_core.schema import ris_orders, ris_reports
from ris_core.states import InvalidTransition
from tests.ris import messages as m
from tests.ris.conftest import NOW, apply, one, rows


def started(store: Store, rt: CompiledRis) -> int:
    """An order ACC100 that is IN_PROGRESS; its id."""
    apply(store, rt, m.orm())
    oid = one(store, select(ris_orders.c.id).where(ris_orders.c.accession == "ACC100"))[0]
    store.transact_sync(orders.thd_apply, oid, "START", source="test", now=NOW)
    return oid


def state(store: Store, oid: int) -> str:
    """The order's state."""
    return one(store, select(ris_orders.c.state).where(ris_orders.c.id == oid))[0]


def test_preliminary_final_corrected(any_store: Store, rt: CompiledRis) -> None:
    """P → REPORTED_PRELIM, F → FINALIZED, C keeps FINALIZED; versions 1, 2, 3 with their text and author."""
    oid = started(any_store, rt)
    for i, (status, expected) in enumerate((("P", "REPORTED_PRELIM"), ("F", "FINALIZED"), ("C", "FINALIZED"))):
        changes, _ = apply(any_store, rt, m.oru(f"R{i}", status=status, lines=(f"text {status}",)), message_id=20 + i)
        assert state(any_store, oid) == expected and changes[0].event == f"REPORT_{status}"
        assert changes[0].report_id is not None
    r = ris_reports.c
    found = rows(any_store, select(r.version, r.status, r.text, r.author, r.message_id, r.observed_at).where(
        r.order_ref == oid).order_by(r.version))  # fmt: skip
    assert [tuple(x) for x in found] == [
        (1, "P", "text P", "RADIOLOGIST^RUTH", 20, "20240305120000"),
        (2, "F", "text F", "RADIOLOGIST^RUTH", 21, "20240305120000"),
        (3, "C", "text C", "RADIOLOGIST^RUTH", 22, "20240305120000"),
    ]


def test_report_redelivery_keeps_one_version(any_store: Store, rt: CompiledRis) -> None:
    """The same ORU again (same message id, or same MSH-10) adds no version."""
    oid = started(any_store, rt)
    apply(any_store, rt, m.oru(), message_id=30)
    assert apply(any_store, rt, m.oru(), message_id=30) == ([], [])
    assert apply(any_store, rt, m.oru(), message_id=31) == ([], [])
    assert len(rows(any_store, select(ris_reports.c.id).where(ris_reports.c.order_ref == oid))) == 1


def test_report_by_filler_number(any_store: Store, rt: CompiledRis) -> None:
    """Without OBR-18 the report finds its order by the filler number the RIS sent back."""
    oid = started(any_store, rt)
    apply(any_store, rt, m.oru(accession="", filler="ACC100^RADBRIDGE"))
    assert state(any_store, oid) == "FINALIZED"


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        (m.oru(accession="NOPE"), Rejected, "report for an unknown order NOPE"),
        (m.oru(status="X"), Rejected, "OBR-25 result status X of order ACC100 is not P, F or C"),
        (m.oru(patient="P999"), Rejected, "order ACC100 belongs to another patient"),
        (m.oru(status="C"), InvalidTransition, "REPORT_C is not allowed for order ACC100 in state IN_PROGRESS"),
    ],
)
def test_refused_reports(any_store: Store, rt: CompiledRis, text: str, error: type, words: str) -> None:
    """Unknown order, unknown status, another patient's order, a correction before a final: refused, nothing kept."""
    apply(any_store, rt, m.adt("A04", "A0", patient="P999"))
    oid = started(any_store, rt)
    with pytest.raises(error, match=words):
        apply(any_store, rt, text)
    assert state(any_store, oid) == "IN_PROGRESS"
    assert rows(any_store, select(ris_reports.c.id)) == []


def test_report_before_the_exam_is_refused(any_store: Store, rt: CompiledRis) -> None:
    """A report for a SCHEDULED order (no exam yet) is an illegal transition."""
    apply(any_store, rt, m.orm())
    with pytest.raises(InvalidTransition, match="in state SCHEDULED"):
        apply(any_store, rt, m.oru())
