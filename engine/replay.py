"""Replay stored messages through a new version of a channel and compare what each destination would get.

:func:`compare` runs one stored message through the new channel with the pure pipeline
(``run_pipeline``: nothing is sent, nothing is stored) and sets it beside what the store says the
old version produced: the source status and every delivery's content. The verdict is one of
``unchanged``, ``changed``, ``newly_filtered``, ``newly_erroring``, ``newly_passing`` or
``unreadable`` (stored bytes that no longer decode), with a unified diff per destination.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from engine.store.schema import ERROR, FILTERED

VERDICTS = ("changed", "unchanged", "newly_filtered", "newly_erroring", "newly_passing", "unreadable")


@dataclass
class Comparison:
    """One stored message replayed."""

    message_id: int
    control_id: str | None
    verdict: str
    old_status: str
    new_status: str = ""
    reason: str = ""  # the new filter or error text
    diffs: dict[str, list[str]] = field(default_factory=dict)  # destination -> unified diff lines


def _lines(text: str | None) -> list[str]:
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n") if text else []


def _by_destination(pairs: list[tuple[str, str | None]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, content in pairs:
        out.setdefault(name, []).append(content or "")
    return out


def diff_outputs(old: dict[str, list[str]], new: dict[str, list[str]]) -> dict[str, list[str]]:
    """Unified diffs of every destination whose outputs differ (a missing destination is an empty output)."""
    diffs = {}
    for name in sorted(set(old) | set(new)):
        a = [line for text in old.get(name, []) for line in _lines(text)]
        b = [line for text in new.get(name, []) for line in _lines(text)]
        if a != b or len(old.get(name, [])) != len(new.get(name, [])):
            diffs[name] = list(difflib.unified_diff(a, b, f"{name} (stored)", f"{name} (new)", lineterm=""))
            if not diffs[name]:
                diffs[name] = [f"{name}: {len(old.get(name, []))} output(s) stored, {len(new.get(name, []))} now"]
    return diffs


def compare(stored: dict[str, Any], spec: Any, now: float) -> Comparison:
    """Replay *stored* (``thd_get_message``) through channel *spec* without sending or storing anything."""
    from engine.cli_messages import ReprocessError, reprocess_values

    out = Comparison(stored["id"], stored.get("control_id"), "unchanged", stored["status"])
    try:
        values, outputs, status = reprocess_values(stored, spec, now)
    except ReprocessError as exc:
        out.verdict, out.reason = "unreadable", str(exc)
        return out
    out.new_status = status
    out.reason = values.get("error") or values.get("filter_info") or ""
    old_status = stored["status"]
    if status == FILTERED:
        out.verdict = "unchanged" if old_status == FILTERED else "newly_filtered"
        return out
    if status == ERROR:
        out.verdict = "unchanged" if old_status == ERROR else "newly_erroring"
        return out
    old = _by_destination([(d["destination"], d["content"]) for d in stored.get("deliveries", [])])
    out.diffs = diff_outputs(old, _by_destination(outputs))
    if old_status in (FILTERED, ERROR):
        out.verdict = "newly_passing"
    elif out.diffs:
        out.verdict = "changed"
    return out


def summary(results: list[Comparison]) -> dict[str, int]:
    """How many messages got each verdict."""
    counts = dict.fromkeys(VERDICTS, 0)
    for r in results:
        counts[r.verdict] += 1
    return counts
