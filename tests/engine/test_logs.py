"""The log setup: JSON lines, and PHI masked at INFO and above by the handler's RedactingFilter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from engine import logs
from engine.logs import JSONFormatter, RedactingFilter, redact, setup_logging

ORM = "MSH|^~\\&|HIS|HOSP|RIS|RAD|20240305||ORM^O01|CTRL42|P|2.3.1\rPID|1||9876^^^HOSP||ZEBRA^QUINN\rOBR|1|A1"


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """A stream for setup_logging to write to; the root logger and Twisted's log are put back afterwards."""
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("pynetdicom").level
    monkeypatch.setattr(logs, "globalLogBeginner", type("Beginner", (), {"beginLoggingTo": lambda *a, **k: None})())
    yield out
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("pynetdicom").setLevel(saved[2])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("delivery 7 (CTRL42) to a/b failed: ORM^O01 rejected", "delivery 7 (CTRL42) to a/b failed: ORM^O01 rejected"),
        ("got " + ORM, "got MSH|***\rPID|***\rOBR|***"),
        ("raw b'MSH|^~\\\\&|A\\rPID|1||42||DOE^JOHN'", "raw b'MSH|***"),
        ("name ZEBRA^QUINN^J, id 9876^^^HOSP^MR", "name ***, id ***"),
        ("input_value='VAN DER BERG^JAN PAUL' is bad", "input_value='***' is bad"),
        ("(0010,0010) Patient's Name          PN: ZEBRA", "(0010,0010) Patient's Name          PN: ***"),
        ("PatientID=9876, PatientBirthDate=19700101", "PatientID=***, PatientBirthDate=***"),
        ("Müller^Jürgen", "***"),
        ("ADT^A01^ADT_A01 from 10.1.2.3:2575 in 3.5 ms", "ADT^A01^ADT_A01 from 10.1.2.3:2575 in 3.5 ms"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    """Segments, caret composites and named patient attributes are masked; ids, types and addresses are kept."""
    assert redact(text) == expected


def test_info_lines_are_masked_debug_lines_are_not(stream: io.StringIO) -> None:
    """At INFO a message with PHI in its arguments is masked; DEBUG (opt-in troubleshooting) keeps the detail."""
    setup_logging("DEBUG", "text", stream)
    log = logging.getLogger("radbridge.test")
    log.info("channel a received %s", ORM)
    log.warning("patient %s", "ZEBRA^QUINN")
    log.debug("parsed %s", "ZEBRA^QUINN")
    lines = stream.getvalue().rstrip("\n").split("\n")  # the masked segments keep their CRs
    assert len(lines) == 3
    assert "ZEBRA" not in lines[0] and "9876" not in lines[0] and "MSH|***" in lines[0]
    assert lines[1].endswith("WARNING radbridge.test patient ***")
    assert lines[2].endswith("parsed ZEBRA^QUINN")


def test_tracebacks_are_masked(stream: io.StringIO) -> None:
    """An exception whose text holds PHI is logged with the PHI masked, in text and in JSON."""
    for fmt in ("text", "json"):
        setup_logging("INFO", fmt, stream)
        try:
            raise ValueError(f"cannot parse {ORM}")
        except ValueError:
            logging.getLogger("radbridge.test").exception("ingest failed for CTRL42")
    out = stream.getvalue()
    assert "ZEBRA" not in out and "9876" not in out
    assert out.count("ingest failed for CTRL42") == 2 and "ValueError: cannot parse MSH|***" in out
    assert "ValueError: cannot parse MSH|***" in json.loads(out.splitlines()[-1])["exc"]


def test_json_lines(stream: io.StringIO) -> None:
    """Every line of the JSON format is an object with ts, level, logger and msg."""
    setup_logging("INFO", "json", stream)
    logging.getLogger("radbridge.a").info("one %d", 1)
    logging.getLogger("twisted").error("two ünïcode")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["level"], x["logger"], x["msg"]) for x in lines] == [
        ("INFO", "radbridge.a", "one 1"), ("ERROR", "twisted", "two ünïcode")
    ]  # fmt: skip
    assert all(x["ts"].endswith("Z") and x["ts"][10] == "T" for x in lines)


class CountingFilter(RedactingFilter):
    """A RedactingFilter that counts the records it sees."""

    calls = 0

    def filter(self, record: logging.LogRecord) -> bool:
        """Count, then redact."""
        CountingFilter.calls += 1
        return super().filter(record)


def test_filter_does_not_run_for_records_below_the_level(stream: io.StringIO, monkeypatch: Any) -> None:
    """A log call below the configured level never reaches the filter (no cost on the hot path)."""
    monkeypatch.setattr(logs, "RedactingFilter", CountingFilter)
    setup_logging("INFO", "text", stream)
    log = logging.getLogger("radbridge.hot")
    for _ in range(1000):
        log.debug("message %s stored", "CTRL42")
    assert CountingFilter.calls == 0
    log.info("one line")
    assert CountingFilter.calls == 1
    assert stream.getvalue().count("\n") == 1


def test_json_formatter_without_filter_keeps_text() -> None:
    """The formatter itself changes nothing: masking is the filter's job (so DEBUG handlers may show detail)."""
    record = logging.LogRecord("radbridge", logging.INFO, __file__, 1, "x %s", ("DOE^JOHN",), None)
    assert json.loads(JSONFormatter().format(record))["msg"] == "x DOE^JOHN"
    assert RedactingFilter().filter(record) and json.loads(JSONFormatter().format(record))["msg"] == "x ***"
