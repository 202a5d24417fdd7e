"""Check a case's outcome against its ``expect:``; every failure is one readable line (or a diff)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from engine.event import Event
from engine.hl7.message import HL7Message
from engine.testing.cases import Case
from engine.testing.harness import Outcome

SEQ = "ScheduledProcedureStepSequence"


def resolve(name: str, outcome: Outcome, channel: str | None) -> tuple[str | None, str]:
    """``channel.destination`` for *name* (a destination name, or already qualified); (None, why) if not found."""
    known = {**dict.fromkeys(outcome.outputs, "memory"), **outcome.kept}
    if name in known:
        return name, ""
    matches = [key for key in known if key.split(".", 1)[1] == name]
    if channel and f"{channel}.{name}" in known:
        return f"{channel}.{name}", ""
    if len(matches) == 1:
        return matches[0], ""
    if matches:
        return None, f"destination {name!r} is ambiguous: write one of {', '.join(sorted(matches))}"
    return None, f"no destination {name!r} (known: {', '.join(sorted(known)) or 'none'})"


def field_value(text: str, path: str) -> str:
    """The value at *path* of one output: an HL7 field path, or a DICOM keyword of an event."""
    if text.startswith("MSH"):
        return HL7Message(text)[path]
    try:
        event = Event.from_text(text)
    except ValueError:
        return ""
    return event.attrs.get(path, "")


def _fields(text: str, expected: dict[str, Any], where: str) -> list[str]:
    problems = []
    for path, want in expected.items():
        got = field_value(text, str(path))
        if str(got) != ("" if want is None else str(want)):
            problems.append(f"{where} {path}: expected {str(want)!r}, got {got!r}")
    return problems


def check_outputs(case: Case, outcome: Outcome) -> list[str]:
    """Field assertions per destination, then ``no_output_from``."""
    problems: list[str] = []
    for name, spec in case.expect.outputs.items():
        key, why = resolve(name, outcome, case.channel)
        if key is None:
            problems.append(why)
            continue
        got = outcome.outputs[key]
        wanted = [spec] if isinstance(spec, dict) else list(spec)
        if len(got) != len(wanted):
            problems.append(f"{name}: expected {len(wanted)} output(s), got {len(got)}")
        for i, (text, fields) in enumerate(zip(got, wanted)):
            problems += _fields(text, fields or {}, f"{name}[{i}]" if len(wanted) > 1 else name)
    for name in case.expect.no_output_from:
        key, why = resolve(name, outcome, case.channel)
        if key is None:
            problems.append(why)
        elif outcome.outputs.get(key):
            problems.append(f"{name}: expected no output, got {len(outcome.outputs[key])}")
    return problems


def check_acks(case: Case, outcome: Outcome) -> list[str]:
    """MSA-1 of every ACK (or the last one), and the text the last ACK must contain."""
    want = case.expect.ack
    problems = []
    if want is not None:
        wanted = [want] if isinstance(want, str) else list(want)
        got = outcome.acks[-len(wanted) :] if isinstance(want, str) else outcome.acks
        if [str(w) for w in wanted] != got:
            why = next(
                (ack_reason(t) for t, code in zip(outcome.ack_texts, outcome.acks) if code not in ("AA", "CA")), ""
            )
            problems.append(f"ack: expected {', '.join(map(str, wanted))}, got {', '.join(got) or 'none'}{why}")
    if case.expect.ack_text is not None:
        last = outcome.ack_texts[-1] if outcome.ack_texts else ""
        if case.expect.ack_text not in last:
            problems.append(f"ack: expected it to contain {case.expect.ack_text!r}, got {last.strip()!r}")
    return problems


def ack_reason(ack: str) -> str:
    """`` (reason)`` from an ACK's ERR segment or MSA-3, or empty."""
    if not ack.startswith("MSH"):
        return ""
    msg = HL7Message(ack)
    reason = msg["ERR-8"] or msg["MSA-3"] or msg["ERR-1"]
    return f" ({reason})" if reason else ""


def golden_text(outputs: list[str]) -> str:
    """The outputs of one destination as one text: segments on lines, outputs separated by a blank line."""
    return "\n\n".join(o.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n") for o in outputs) + "\n"


def check_golden(case: Case, outcome: Outcome, base: Path, update: bool = False) -> list[str]:
    """Whole outputs against golden files (``update``: write them instead)."""
    problems = []
    for name, file in case.expect.golden.items():
        key, why = resolve(name, outcome, case.channel)
        if key is None:
            problems.append(why)
            continue
        text = golden_text(outcome.outputs.get(key, []))
        path = base / file
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            continue
        if not path.exists():
            problems.append(f"{name}: golden file {file} does not exist (run with --update-golden to write it)")
            continue
        want = path.read_text(encoding="utf-8")
        if want != text:
            diff = difflib.unified_diff(
                want.splitlines(), text.splitlines(), f"{file} (expected)", f"{name} (got)", lineterm=""
            )
            problems.append(f"{name}: differs from {file}\n" + "\n".join("    " + line for line in diff))
    return problems


def _identifier(expected: dict[str, Any]) -> dict[str, Any]:
    """A universal C-FIND identifier returning the expected keys."""
    ident: dict[str, Any] = {}
    for key, value in expected.items():
        if key == SEQ or isinstance(value, list) and value and isinstance(value[0], dict):
            ident[key] = [{k: "" for item in value for k in item}]
        else:
            ident[key] = ""
    return ident


def _matches(row: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    diffs = []
    for key, want in expected.items():
        got = row.get(key)
        if isinstance(want, list) and want and isinstance(want[0], dict):
            items = got if isinstance(got, list) else []
            for i, item in enumerate(want):
                inner = _matches(items[i] if i < len(items) and isinstance(items[i], dict) else {}, item)
                diffs += [f"{key}[{i}].{d}" for d in inner]
            continue
        norm = "\\".join(map(str, got)) if isinstance(got, list) else ("" if got is None else str(got))
        want_s = "\\".join(map(str, want)) if isinstance(want, list) else ("" if want is None else str(want))
        if norm != want_s:
            diffs.append(f"{key}: expected {want_s!r}, got {norm!r}")
    return diffs


def check_worklist(case: Case, outcome: Outcome) -> list[str]:
    """The open worklist items (through the RIS's own C-FIND query) against ``expect.worklist``."""
    wanted = case.expect.worklist
    if wanted is None:
        return []
    if outcome.ris is None:
        return ["worklist: this config has no RIS (ris: section and a ris destination)"]
    keys: dict[str, Any] = {}
    for item in wanted:
        for k, v in _identifier(item).items():
            if isinstance(v, list) and isinstance(keys.get(k), list):
                keys[k][0].update(v[0])
            else:
                keys[k] = v
    rows = list(outcome.ris.worklist(keys))
    problems = []
    if len(rows) != len(wanted):
        problems.append(f"worklist: expected {len(wanted)} item(s), got {len(rows)}")
    free = list(rows)
    for i, item in enumerate(wanted):
        best = None
        for row in free:
            diffs = _matches(row, item)
            if not diffs:
                free.remove(row)
                best = []
                break
            if best is None or len(diffs) < len(best):
                best = diffs
        if best:
            problems.append(f"worklist[{i}]: " + "; ".join(best))
        elif best is None:
            problems.append(f"worklist[{i}]: no item left to match {json.dumps(item, default=str)}")
    return problems
