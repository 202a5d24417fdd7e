"""``radbridge types``: every registered component type with its options; the generated reference files.

``radbridge types [TYPE...]`` prints the listing; ``--markdown [PATH]`` writes
``docs/reference/components.md``, ``--schema [PATH]`` writes ``docs/reference/config.schema.json``
(default paths: under the radbridge checkout holding the current directory); ``--check`` compares
the committed files with freshly generated ones and exits 1 with a diff when they are stale (CI).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import reference

_DEFAULT = "<default>"
_DIFF_LINES = 40
REGENERATE = "radbridge types --markdown --schema"


def checkout_root(start: Path | None = None) -> Path | None:
    """The radbridge checkout holding *start* (default: the current directory), else the one this code runs from."""
    for base in (start or Path.cwd(), Path(__file__).resolve().parent):
        for folder in (base.resolve(), *base.resolve().parents):
            project = folder / "pyproject.toml"
            if project.is_file() and 'name = "radbridge"' in project.read_text(encoding="utf-8", errors="replace"):
                return folder
    return None


def _targets(args: argparse.Namespace) -> list[tuple[Path, Callable[[], str]]]:
    """(path, generator) for each file the command writes or checks; ``SystemExit(2)`` without a checkout."""
    wanted = [(args.markdown, reference.MARKDOWN_PATH, reference.render_markdown)]
    wanted.append((args.schema, reference.SCHEMA_PATH, reference.render_schema))
    if args.check and args.markdown is None and args.schema is None:
        wanted = [(_DEFAULT, rel, gen) for _, rel, gen in wanted]
    out = []
    for given, rel, gen in wanted:
        if given is None:
            continue
        if given == _DEFAULT:
            root = checkout_root()
            if root is None:
                print(f"radbridge types: no radbridge checkout here; give the path of {rel.name}", file=sys.stderr)
                raise SystemExit(2)
            given = root / rel
        out.append((Path(given), gen))
    return out


def stale(path: Path, fresh: str) -> list[str]:
    """Unified diff lines from the committed *path* to *fresh* (empty when they are equal)."""
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [f"{path}: missing"]
    if old == fresh:
        return []
    diff = difflib.unified_diff(old.splitlines(), fresh.splitlines(), f"{path} (committed)", f"{path} (generated)")
    return [line.rstrip("\n") for line in diff]


def cmd_types(args: argparse.Namespace) -> int:
    """Print the listing, write the reference files, or check that the committed ones are current."""
    targets = _targets(args)
    if args.check:
        failed = 0
        for path, gen in targets:
            diff = stale(path, gen())
            if diff:
                failed += 1
                changed = sum(1 for d in diff[2:] if d[:1] in "+-")
                print(f"{path} is stale ({changed} lines differ); regenerate with: {REGENERATE}", file=sys.stderr)
                more = len(diff) - _DIFF_LINES
                print("\n".join(diff[:_DIFF_LINES] + [f"... {more} more diff lines"] * (more > 0)), file=sys.stderr)
            else:
                print(f"{path}: up to date")
        return 1 if failed else 0
    for path, gen in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(gen(), encoding="utf-8")
        print(f"wrote {path}")
    if not targets:
        sys.stdout.write(reference.render_text(only=args.names or None))
    return 0


def register(subparsers: Any) -> None:
    """Add ``radbridge types [TYPE...] [--markdown [PATH]] [--schema [PATH]] [--check]``."""
    p = subparsers.add_parser("types", help="list every component type with its options; write or check the reference")
    p.add_argument("names", nargs="*", metavar="TYPE", help="only these types or sections (e.g. mllp_sender)")
    p.add_argument(
        "--markdown", nargs="?", const=_DEFAULT, metavar="PATH", help=f"write {reference.MARKDOWN_PATH} (or PATH)"
    )
    p.add_argument(
        "--schema", nargs="?", const=_DEFAULT, metavar="PATH", help=f"write {reference.SCHEMA_PATH} (or PATH)"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when the committed files differ from generated ones")
    p.set_defaults(func=cmd_types)
