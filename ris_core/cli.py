"""``radbridge ris orders|order|worklist|unmatched``: the RIS tables from the command line.

An operator's tool reading the store directly (next to a running engine; reads only). Lists show
ids, accessions and states; patient names appear only in the detail of one order (``ris order``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from engine.cli_common import store_command
from ris_core.schema import ris_history, ris_mpps, ris_orders, ris_patients, ris_reports, ris_sps


def _open(args: argparse.Namespace) -> Any:
    from engine.cli import load_config
    from engine.store.store import Store

    vc = load_config(args.config, check_ports=False)
    if vc is None:
        raise SystemExit(1)
    return Store(vc.database_url, None, sqlite_synchronous=vc.root.store.sqlite_synchronous, writer_mode="thread")


def _read(args: argparse.Namespace, fn: Any, *a: Any, **kw: Any) -> Any:
    """Run ``fn(conn, ...)`` on the config's store, then close it."""
    store = _open(args)
    try:
        return store.read_sync(fn, *a, **kw)
    finally:
        store.engine.dispose()


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(query)]


def thd_list_orders(conn: Connection, *, state: str | None = None, patient_id: str | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
    """Orders newest first (no names): id, accession, state, modality, patient id, times."""
    o, p = ris_orders.c, ris_patients.c
    query = select(o.id, o.accession, o.state, o.modality, o.procedure_code, o.reconcile, o.study_uid,
                   p.patient_id, p.issuer, o.created_at, o.updated_at).join(ris_patients, p.id == o.patient_ref)  # fmt: skip
    if state:
        query = query.where(o.state == state.upper())
    if patient_id:
        query = query.where(p.patient_id == patient_id)
    return _rows(conn, query.order_by(o.id.desc()).limit(limit))


def thd_order_detail(conn: Connection, accession: str) -> dict[str, Any] | None:
    """One order with its patient, steps, MPPS, reports and full state history."""
    row = conn.execute(select(ris_orders).where(ris_orders.c.accession == accession)).first()
    if row is None:
        return None
    order = dict(row._mapping)
    order["attrs"] = json.loads(order["attrs"] or "{}")
    oid = order["id"]
    patient = dict(conn.execute(select(ris_patients).where(ris_patients.c.id == row.patient_ref)).one()._mapping)
    patient["other_ids"] = json.loads(patient["other_ids"] or "[]")
    patient["attrs"] = json.loads(patient["attrs"] or "{}")
    sps = [{k: v for k, v in r.items() if k != "item"} for r in _rows(conn, select(ris_sps).where(
        ris_sps.c.order_ref == oid).order_by(ris_sps.c.id))]  # fmt: skip
    mpps = [{k: v for k, v in r.items() if k != "attrs"} for r in _rows(conn, select(ris_mpps).where(
        ris_mpps.c.order_ref == oid).order_by(ris_mpps.c.id))]  # fmt: skip
    reports = _rows(conn, select(ris_reports).where(ris_reports.c.order_ref == oid).order_by(ris_reports.c.version))
    history = _rows(conn, select(ris_history).where(ris_history.c.order_ref == oid).order_by(ris_history.c.id))
    return {**order, "patient": patient, "sps": sps, "mpps": mpps, "reports": reports, "history": history}


def thd_list_worklist(conn: Connection, *, modality: str | None = None, date: str | None = None,
                      limit: int = 500) -> list[dict[str, Any]]:  # fmt: skip
    """Worklist rows (no names) of open orders: step id, accession, modality, station, start, status."""
    from ris_core.states import OPEN_ON_WORKLIST

    s, o = ris_sps.c, ris_orders.c
    query = select(s.sps_id, s.accession, s.modality, s.station_ae, s.start_date, s.start_time, s.status,
                   s.patient_id, o.state).join(ris_orders, o.id == s.order_ref).where(o.state.in_(OPEN_ON_WORKLIST))  # fmt: skip
    if modality:
        query = query.where(s.modality == modality.upper())
    if date:
        query = query.where(s.start_date == date)
    return _rows(conn, query.order_by(s.start_date, s.start_time, s.id).limit(limit))


def cmd_orders(args: argparse.Namespace) -> int:
    """List orders, newest first."""
    rows = _read(args, thd_list_orders, state=args.state, patient_id=args.patient_id, limit=args.limit)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'id':>7}  {'accession':16} {'state':15} {'mod':5} {'patient id':20} updated (UTC)")
    for r in rows:
        flag = "  [unscheduled]" if r["reconcile"] else ""
        print(f"{r['id']:>7}  {r['accession']:16} {r['state']:15} {(r['modality'] or '-'):5} "
              f"{r['patient_id'][:20]:20} {_iso(r['updated_at'])}{flag}")  # fmt: skip
    print(f"{len(rows)} order(s)")
    return 0


def cmd_order(args: argparse.Namespace) -> int:
    """One order in detail (patient, steps, MPPS, reports, history with the triggering message ids)."""
    detail = _read(args, thd_order_detail, args.accession)
    if detail is None:
        print(f"ris order: no order with accession {args.accession}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(detail, default=str))
        return 0
    p = detail["patient"]
    print(f"order {detail['id']}  accession {detail['accession']}  state {detail['state']}")
    print(f"  patient      {p['patient_id']}^{p['issuer'] or ''}  {p['name'] or '-'}  {p['birth_date'] or '-'}"
          f"  {p['sex'] or '-'}{'  (merged)' if p['merged_into'] else ''}")  # fmt: skip
    print(f"  procedure    {detail['procedure_code'] or '-'} {detail['procedure_text'] or ''}  modality "
          f"{detail['modality'] or '-'}  priority {detail['priority'] or '-'}")  # fmt: skip
    print(f"  study        {detail['study_uid']}  requested procedure {detail['requested_procedure_id'] or '-'}")
    print(f"  placer       {detail['placer_number'] or '-'} ({detail['placer_app'] or '-'})  filler "
          f"{detail['filler_number'] or '-'}")  # fmt: skip
    for s in detail["sps"]:
        print(f"  step         {s['sps_id']}  {s['status']}  {s['modality'] or '-'}  {s['station_ae'] or '-'}  "
              f"{s['start_date'] or '-'} {s['start_time'] or ''}")  # fmt: skip
    for m in detail["mpps"]:
        print(f"  mpps         {m['sop_instance_uid']}  {m['status']}  {m['station_ae'] or '-'}")
    for r in detail["reports"]:
        print(f"  report v{r['version']}    {r['status']}  {r['author'] or '-'}  {_iso(r['created_at'])}")
    for h in detail["history"]:
        msg = f"  message {h['message_id']}" if h["message_id"] else ""
        print(f"  {_iso(h['at'])}  {h['from_state'] or '-':15} -> {h['to_state']:15} {h['event']:12} "
              f"{h['source'] or '-'}{msg}")  # fmt: skip
    return 0


def cmd_worklist(args: argparse.Namespace) -> int:
    """The open worklist (steps of ORDERED, SCHEDULED, ARRIVED and IN_PROGRESS orders)."""
    date = time.strftime("%Y%m%d") if args.date == "today" else args.date
    rows = _read(args, thd_list_worklist, modality=args.modality, date=date)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'step':16} {'accession':16} {'mod':5} {'station AE':17} {'start':15} {'status':10} patient id")
    for r in rows:
        start = f"{r['start_date'] or '-'} {(r['start_time'] or '')[:6]}"
        print(f"{r['sps_id']:16} {r['accession'] or '-':16} {r['modality'] or '-':5} {(r['station_ae'] or '-')[:17]:17} "
              f"{start:15} {r['status']:10} {r['patient_id'] or '-'}")  # fmt: skip
    print(f"{len(rows)} step(s)")
    return 0


def cmd_unmatched(args: argparse.Namespace) -> int:
    """Studies in the archive that no order matched (for reconciliation)."""
    from ris_core.images import thd_unmatched

    rows = _read(args, thd_unmatched)
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'study instance uid':64} {'accession':16} {'instances':>9}  last seen (UTC)")
    for r in rows:
        print(f"{r['study_uid']:64} {r['accession'] or '-':16} {r['instances']:>9}  {_iso(r['last_seen'])}")
    print(f"{len(rows)} unmatched stud{'y' if len(rows) == 1 else 'ies'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``ris`` and its subcommands ``orders``, ``order``, ``worklist`` and ``unmatched``."""
    p = subparsers.add_parser("ris", help="orders, worklist and unmatched studies of the RIS core")
    sub = p.add_subparsers(dest="ris_command", required=True)

    def cmd(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        return store_command(sub, name, func, help_text)

    o = cmd("orders", cmd_orders, "list orders, newest first")
    o.add_argument("--state", help="only orders in this state (e.g. SCHEDULED)")
    o.add_argument("--patient-id", help="only this patient's orders")
    o.add_argument("--limit", type=int, default=200)
    cmd("order", cmd_order, "one order: patient, steps, MPPS, reports, history").add_argument("accession")
    w = cmd("worklist", cmd_worklist, "the open worklist")
    w.add_argument("--modality", help="e.g. CT")
    w.add_argument("--date", help="scheduled start date YYYYMMDD (or 'today')")
    cmd("unmatched", cmd_unmatched, "studies no order matched")
