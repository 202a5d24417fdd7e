"""``radbridge archive verify|prune``: the archive from the command line.

``verify`` rechecks every indexed file (exists, size, SHA-256) and with ``--orphans`` lists files
no row names; exit 1 if anything is wrong. ``prune`` runs retention now (``retention.max_age``
or ``--older-than``). Both work next to a running engine: verify only reads, in short pages;
prune deletes in small transactions.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.cli_common import store_command
from engine.config.models import parse_duration


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from archive.archive import resolve_root
    from engine.cli import load_config
    from engine.store.store import Store

    vc = load_config(args.config, check_ports=False)
    if vc is None:
        raise SystemExit(1)
    store = Store(vc.database_url, None, sqlite_synchronous=vc.root.store.sqlite_synchronous, writer_mode="thread")
    return vc, store, resolve_root(vc.root.archive, vc.config_dir, vc.data_dir)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def cmd_verify(args: argparse.Namespace) -> int:
    """Recheck every indexed instance and archived HL7 file; exit 1 if any is missing or corrupt."""
    from archive.verify import Problem, verify

    vc, store, root = _open(args)

    def show(p: Problem) -> None:
        if not args.json:
            key = f"  ({'message' if p.what == 'hl7' else 'sop'} {p.key})" if p.key else ""
            print(f"{p.kind.upper():8} {p.what:8} {p.path}: {p.detail}{key}")

    try:
        report = verify(store, root, hl7_layout=vc.root.archive.hl7_layout, orphans=args.orphans, on_problem=show)
    except ValueError as exc:
        print(f"archive verify: {exc}", file=sys.stderr)
        return 1
    finally:
        store.engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        orphans = f", {report.count('orphan')} orphans" if args.orphans else ""
        print(
            f"verified {report.instances} instances and {report.hl7} HL7 files ({_size(report.bytes)}) under {root}: "
            f"{report.count('missing')} missing, {report.count('corrupt')} corrupt{orphans}"
        )
    return 0 if report.ok else 1


def cmd_prune(args: argparse.Namespace) -> int:
    """Delete studies and archived HL7 older than the retention age now, in small batches."""
    from archive.retention import prune_sync

    vc, store, root = _open(args)
    retention = vc.root.archive.retention
    age = parse_duration(args.older_than) if args.older_than else retention.max_age
    if age is None:
        print("archive prune: archive.retention.max_age is not set; give --older-than", file=sys.stderr)
        return 1
    try:
        pruned = prune_sync(store, root, age, retention.batch_size, vc.root.archive.fsync)
    finally:
        store.engine.dispose()
    if args.json:
        print(json.dumps(vars(pruned)))
    else:
        print(f"{pruned.studies} studies ({pruned.instances} instances) and {pruned.hl7} HL7 files pruned")
    return 0


def register(subparsers: Any) -> None:
    """Add ``archive`` and its subcommands ``verify`` and ``prune``."""
    p = subparsers.add_parser("archive", help="verify and prune the filesystem archive")
    sub = p.add_subparsers(dest="archive_command", required=True)

    def cmd(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        return store_command(sub, name, func, help_text, "the engine's config (database and archive root)")

    v = cmd("verify", cmd_verify, "recheck every archived file against the index (exit 1 if anything is wrong)")
    v.add_argument("--orphans", action="store_true", help="also list files under the root that no index row names")
    pr = cmd("prune", cmd_prune, "run retention now")
    pr.add_argument("--older-than", help="override archive.retention.max_age (e.g. 365d)")
