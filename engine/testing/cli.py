"""``radbridge test [PATH ...]``: run channel test cases offline; exit 1 when one fails."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def cmd_test(args: argparse.Namespace) -> int:
    """Collect and run the cases; print failures as ``name [file:line]: reason`` and a summary."""
    from engine.testing.cases import collect
    from engine.testing.runner import quiet_logs, run_suite, summary

    started = time.perf_counter()
    restore = quiet_logs()
    results = []
    try:
        for target in args.paths or ["."]:
            path = Path(target)
            if not path.exists():
                print(f"radbridge test: {target}: no such file or folder", file=sys.stderr)
                return 2
            for suite in collect(path):
                results += run_suite(suite, update_golden=args.update_golden, select=args.k)
    finally:
        restore()
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps([{"name": r.name, "file": r.mark.file if r.mark else None, "line": r.mark.line if r.mark
                           else None, "passed": r.passed, "problems": r.problems} for r in results]))  # fmt: skip
    else:
        for r in results:
            if r.passed:
                if args.verbose:
                    print(f"ok   {r.name} ({r.seconds * 1000:.0f} ms)")
            else:
                print(r.format())
        print(summary(results, elapsed) if results else "no test cases found")
    return 1 if any(not r.passed for r in results) or not results else 0


def add_parser(sub: Any) -> None:
    """Add ``radbridge test``."""
    t = sub.add_parser("test", help="run the test cases of configs and *.test.yaml files offline")
    t.add_argument("paths", nargs="*", metavar="PATH", help="config, *.test.yaml or folder (default: .)")
    t.add_argument("-k", metavar="TEXT", help="only cases whose name contains TEXT")
    t.add_argument("--update-golden", action="store_true", help="write golden files from what the cases produce")
    t.add_argument("-v", "--verbose", action="store_true", help="list passing cases too")
    t.add_argument("--json", action="store_true", help="one JSON list of results")
    t.set_defaults(func=cmd_test)
