"""``radbridge messages search|show|reprocess|resend|prune``: the store from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from engine.cli_common import store_command
from engine.config.models import parse_duration


def parse_when(value: str | None) -> float | None:
    """Epoch seconds from ISO time (``2026-11-23T10:00``) or an age (``2h`` = two hours ago); ValueError if neither."""
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        dt = datetime.fromisoformat(value)
        return (dt if dt.tzinfo else dt.astimezone()).timestamp()


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts else "-"


def _open(args: argparse.Namespace):
    from engine.cli import load_config
    from engine.store.store import Store

    vc = load_config(args.config, check_ports=False)
    if vc is None:
        raise SystemExit(1)
    return vc, Store(vc.database_url, None, sqlite_synchronous=vc.root.store.sqlite_synchronous, writer_mode="thread")


def cmd_search(args: argparse.Namespace) -> int:
    """List messages matching the criteria, newest first."""
    from engine.store.queries import thd_search

    _, store = _open(args)
    rows = store.read_sync(
        thd_search,
        channel=args.channel,
        status=args.status,
        since=parse_when(args.since),
        until=parse_when(args.until),
        control_id=args.control_id,
        patient_id=args.patient_id,
        accession=args.accession,
        message_type=args.type,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps(rows, default=str))
        return 0
    print(f"{'id':>8}  {'received (UTC)':29}  {'channel':16} {'status':11} {'type':10} control id")
    for r in rows:
        print(
            f"{r['id']:>8}  {_iso(r['received_at']):29}  {r['channel'][:16]:16} {r['status']:11} "
            f"{(r['message_type'] or '-')[:10]:10} {r['control_id'] or '-'}"
            + (f"  [{r['error'][:60]}]" if r["error"] else "")
        )
    print(f"{len(rows)} message(s)")
    return 0


def _show_text(raw: bytes | str | None, charset: str | None) -> str:
    if raw is None:
        return "-"
    text = raw.decode(charset or "utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return "\n".join("    " + s for s in text.replace("\r\n", "\r").split("\r") if s)


def cmd_show(args: argparse.Namespace) -> int:
    """Print one message stage by stage: received, filtered, transformed, sent, response."""
    from engine.store.queries import thd_get_message

    _, store = _open(args)
    m = store.read_sync(thd_get_message, args.id)
    if m is None:
        print(f"no message {args.id}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(message_json(m), default=str))
        return 0
    print(f"message {m['id']}  channel {m['channel']}  status {m['status']}  received {_iso(m['received_at'])}")
    print(f"  type {m['message_type']}  MSH-10 {m['control_id']}  origin {m['origin']}  charset {m['charset']}")
    for label, key in (("duplicate of", "duplicate_of"), ("reprocessed from", "parent_id"), ("error", "error")):
        if m[key]:
            print(f"  {label}: {m[key]}")
    print("RECEIVED\n" + _show_text(m["raw"], m["charset"]))
    if m["filter_info"]:
        print(f"FILTERED\n    {m['filter_info']}")
    if m["transformed"]:
        print("TRANSFORMED (channel)\n" + _show_text(m["transformed"], None))
    for d in m["deliveries"]:
        print(
            f"DESTINATION {d['destination']}  status {d['status']}  attempts {d['attempts']}  sent {_iso(d['sent_at'])}"
        )
        print("  TRANSFORMED / SENT\n" + _show_text(d["content"], None))
        if d["response"]:
            print("  RESPONSE\n" + _show_text(d["response"], None))
        if d["last_error"]:
            print(f"  ERROR {d['last_error']}")
    return 0


class ReprocessError(ValueError):
    """A stored message that cannot be run through its channel again."""


def reprocess_values(m: dict[str, Any], spec: Any, now: float) -> tuple[dict[str, Any], list[tuple[str, str]], str]:
    """(message row, deliveries, status) of stored message *m* run again through channel *spec* as a new message.

    Raises :class:`ReprocessError` when the stored bytes cannot be decoded or parsed.
    """
    from engine.hl7.header import header_values
    from engine.hl7.message import HL7Error, HL7Message
    from engine.pipeline import run_pipeline

    try:
        msg = HL7Message(m["raw"].decode(m["charset"] or spec.config.charset))
    except (HL7Error, UnicodeDecodeError, LookupError) as exc:
        raise ReprocessError(f"cannot be read: {exc}") from None
    result = run_pipeline(msg, spec.compiled)
    values: dict[str, Any] = {
        "channel": spec.config.name, "received_at": now, "status": result.status,
        "charset": m["charset"], "origin": f"reprocess:{m['id']}", "raw": m["raw"], "transformed": result.transformed,
        "filter_info": result.filter_info, "error": result.error, "duplicate_of": None, "parent_id": m["id"],
        **header_values(msg),
    }  # fmt: skip
    return values, result.outputs, result.status


def resend_ids(m: dict[str, Any] | None, include_sent: bool = False) -> list[int]:
    """Ids of the deliveries of message *m* to queue again: those in ERROR (every one with *include_sent*)."""
    return [d["id"] for d in (m or {"deliveries": []})["deliveries"] if d["status"] == "ERROR" or include_sent]


def message_json(m: dict[str, Any]) -> dict[str, Any]:
    """A stored message (``thd_get_message``) with its raw bytes decoded, for JSON output."""
    return {**m, "raw": m["raw"].decode(m["charset"] or "utf-8", errors="replace")}


def cmd_reprocess(args: argparse.Namespace) -> int:
    """Run stored messages through the current config again as new messages (queues pick them up)."""
    from engine.store.queries import thd_get_message, thd_insert_message

    vc, store = _open(args)
    channels = {c.config.name: c for c in vc.channels}
    status = 0
    for mid in args.ids:
        m = store.read_sync(thd_get_message, mid)
        if m is None or m["channel"] not in channels:
            print(f"{mid}: unknown message or channel", file=sys.stderr)
            status = 1
            continue
        try:
            values, outputs, result = reprocess_values(m, channels[args.channel or m["channel"]], time.time())
        except ReprocessError as exc:
            print(f"{mid}: {exc}", file=sys.stderr)
            status = 1
            continue
        new_id = store.transact_sync(thd_insert_message, values, outputs)
        print(f"{mid} -> {new_id} {result} ({len(outputs)} deliveries queued)")
    return status


def cmd_resend(args: argparse.Namespace) -> int:
    """Put ERROR deliveries of the given messages back in their queues."""
    from engine.store.queries import thd_get_message, thd_requeue

    _, store = _open(args)
    ids = []
    for mid in args.ids:
        ids += resend_ids(store.read_sync(thd_get_message, mid), args.all)
    n = store.transact_sync(thd_requeue, ids, time.time()) if ids else 0
    print(f"{n} deliveries queued again")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete old messages now, in small batches (the running engine keeps working)."""
    from engine.store.queries import thd_prune_batch

    vc, store = _open(args)
    total = 0
    for spec in vc.channels:
        cfg = spec.config.prune
        age = parse_duration(args.older_than) if args.older_than else cfg.max_age
        if age is None or (args.channel and spec.config.name != args.channel):
            continue
        while True:
            n = store.transact_sync(thd_prune_batch, spec.config.name, time.time() - age, cfg.keep_errors, 500)
            total += n
            if n < 500:
                break
    print(f"{total} messages pruned")
    return 0


def add_parser(sub: Any) -> None:
    """Add ``messages`` and its subcommands."""
    p = sub.add_parser("messages", help="search, show, reprocess, resend and prune stored messages")
    msub = p.add_subparsers(dest="messages_command", required=True)

    def cmd(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        return store_command(msub, name, func, help_text)

    s = cmd("search", cmd_search, "list messages")
    for opt in ("channel", "status", "since", "until", "control-id", "patient-id", "accession", "type"):
        s.add_argument(f"--{opt}")
    s.add_argument("--limit", type=int, default=100)
    cmd("show", cmd_show, "show one message stage by stage").add_argument("id", type=int)
    r = cmd("reprocess", cmd_reprocess, "run messages through the current channel config again")
    r.add_argument("ids", type=int, nargs="+")
    r.add_argument("--channel", help="reprocess into this channel instead of the original one")
    rs = cmd("resend", cmd_resend, "queue ERROR deliveries again")
    rs.add_argument("ids", type=int, nargs="+")
    rs.add_argument("--all", action="store_true", help="also deliveries that were SENT")
    pr = cmd("prune", cmd_prune, "delete old messages now")
    pr.add_argument("--channel")
    pr.add_argument("--older-than", help="override the channels' prune.max_age (e.g. 30d)")
