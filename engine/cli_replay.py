"""``radbridge replay``: stored messages through a new version of a channel, as a diff or for real."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from engine.replay import Comparison, compare, summary


def _select(store: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The stored originals of the channel in the time range, oldest first, with their deliveries."""
    from engine.cli_messages import parse_when
    from engine.store.queries import thd_get_message, thd_search

    found = store.read_sync(
        thd_search, channel=args.channel, since=parse_when(args.since), until=parse_when(args.until), limit=args.limit
    )
    rows = [r for r in reversed(found) if r["parent_id"] is None and r["duplicate_of"] is None]
    return [m for m in (store.read_sync(thd_get_message, r["id"]) for r in rows) if m is not None]


def _print(result: Comparison) -> None:
    head = f"message {result.message_id} (MSH-10 {result.control_id or '-'}): {result.verdict.replace('_', ' ')}"
    if result.verdict in ("newly_filtered", "newly_erroring", "unreadable") and result.reason:
        head += f": {result.reason}"
    print(head)
    for lines in result.diffs.values():
        for line in lines:
            print("    " + line)


def cmd_replay(args: argparse.Namespace) -> int:
    """Compare (``--dry-run``) or reprocess stored messages of one channel with a new config."""
    from engine.cli import load_config
    from engine.cli_messages import ReprocessError, reprocess_values
    from engine.store.queries import thd_insert_message
    from engine.store.store import Store

    vc = load_config(args.config, check_ports=False)
    if vc is None:
        return 1
    specs = {c.config.name: c for c in vc.channels}
    if args.channel not in specs:
        print(f"radbridge replay: {args.config} has no channel {args.channel!r}", file=sys.stderr)
        return 1
    spec = specs[args.channel]
    store = Store(args.database or vc.database_url, None, writer_mode="thread", migrate=False)
    try:
        stored = _select(store, args)
        now = time.time()
        results = [compare(m, spec, now) for m in stored]
        counts = summary(results)
        if args.json:
            print(json.dumps({"summary": counts, "messages": [asdict(r) for r in results]}))
        else:
            for r in results:
                if r.verdict != "unchanged" or args.verbose:
                    _print(r)
            print(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()) + f" ({len(results)} messages)")
        if args.dry_run or not stored:
            return 0
        if not args.yes:
            answer = input(f"Reprocess {len(stored)} messages of channel {args.channel} with {args.config}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing reprocessed")
                return 1
        done = 0
        for m in stored:
            try:
                values, outputs, _status = reprocess_values(m, spec, time.time())
            except ReprocessError as exc:
                print(f"{m['id']}: {exc}", file=sys.stderr)
                continue
            store.transact_sync(thd_insert_message, values, outputs)
            done += 1
        print(f"{done} messages reprocessed (their deliveries are queued for the running engine)")
        return 0 if done == len(stored) else 1
    finally:
        store.engine.dispose()


def add_parser(sub: Any) -> None:
    """Add ``radbridge replay``."""
    r = sub.add_parser("replay", help="run stored messages through a new version of a channel; diff or reprocess")
    r.add_argument("--channel", required=True, help="the channel whose stored messages are replayed")
    r.add_argument("--config", "-c", required=True, help="the new config (its database holds the messages)")
    r.add_argument("--since", help="ISO time or age (2h, 7d)")
    r.add_argument("--until", help="ISO time or age")
    r.add_argument("--limit", type=int, default=1000, help="at most this many messages, the newest (default 1000)")
    r.add_argument("--database", help="read the messages from this SQLAlchemy URL instead of the config's")
    r.add_argument("--dry-run", action="store_true", help="only print the diff and the summary; send nothing")
    r.add_argument("--yes", "-y", action="store_true", help="reprocess without asking")
    r.add_argument("-v", "--verbose", action="store_true", help="list unchanged messages too")
    r.add_argument("--json", action="store_true", help="one JSON object")
    r.set_defaults(func=cmd_replay)
