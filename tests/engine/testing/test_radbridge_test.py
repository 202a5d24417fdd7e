"""``radbridge test``: cases from a config's tests: block and sidecars, run offline, failures with file:line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.cli import main
from engine.testing.cases import collect

CONFIG = """\
data_dir: ./data
metrics: {{enabled: false}}
channels:
  - name: inbound
    source: {{type: mllp_listener, port: 6661}}
    filter: 'MSH-9.1 in ["ADT", "ORM"]'
    transformer:
      template: |
        {{% set msh = msg.segments[0].split("|") %}}
        {{{{ msh[:2] | join("|") }}}}|RADBRIDGE|{{{{ msh[3:] | join("|") }}}}
        {{% for s in msg.segments[1:] %}}
        {{{{ s }}}}
        {{% endfor %}}
    destinations:
      - name: folder
        type: file_writer
        directory: ./out
        filter: 'MSH-9.1 == "ADT"'
      - name: his
        type: mllp_sender
        host: 127.0.0.1
        port: 6662
{tests}
"""

ADT = """\
      MSH|^~\\&|HIS|HOSP|RB|RAD|20261201120000||ADT^A04|MSG1|P|2.3.1
      PID|1||12345^^^HOSP||DOE^JOHN
"""


def write(tmp_path: Path, tests: str) -> Path:
    """The config with *tests* appended."""
    path = tmp_path / "radbridge.yaml"
    path.write_text(CONFIG.format(tests=tests))
    return path


PASSING = f"""\
tests:
  - name: ADT reaches both destinations
    channel: inbound
    input: |
{ADT}    expect:
      ack: AA
      outputs:
        folder: {{MSH-3: RADBRIDGE, PID-5.1: DOE, PID-3.1: "12345"}}
        his: {{MSH-9.2: A04}}
  - name: ORM skips the folder
    channel: inbound
    input: |
{ADT.replace("ADT^A04", "ORM^O01")}    expect:
      no_output_from: [folder]
      outputs:
        his: {{MSH-9: ORM^O01}}
  - name: ORU is filtered
    channel: inbound
    input: |
{ADT.replace("ADT^A04", "ORU^R01")}    expect:
      ack: AA
      no_output_from: [folder, his]
"""


def test_passing_cases_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cases whose expectations hold pass; the summary counts them and the exit code is 0."""
    assert main(["test", str(write(tmp_path, PASSING))]) == 0
    assert "3 passed, 0 failed" in capsys.readouterr().out


def test_a_failure_names_the_case_its_line_and_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong field value fails with ``name [file:line]: reason`` and exit code 1."""
    config = write(tmp_path, PASSING.replace("PID-5.1: DOE", "PID-5.1: SMITH"))
    assert main(["test", str(config)]) == 1
    out = capsys.readouterr().out
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "ADT reaches both" in text)
    assert f"ADT reaches both destinations [{config}:{line}]: folder PID-5.1: expected 'SMITH', got 'DOE'" in out
    assert "2 passed, 1 failed" in out


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("no_output_from: [folder]", "folder: expected no output, got 1"),
        ("ack: AE", "ack: expected AE, got AA"),
        ("ack_text: nothing-like-this", "ack: expected it to contain 'nothing-like-this'"),
        ("outputs: {nowhere: {MSH-9: X}}", "no destination 'nowhere'"),
        ("outputs: {his: [{MSH-9.2: A04}, {MSH-9.2: A04}]}", "his: expected 2 output(s), got 1"),
    ],
)
def test_each_expectation_can_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, reason: str
) -> None:
    """Every kind of expectation reports its own failure."""
    tests = f"tests:\n  - name: one\n    channel: inbound\n    input: |\n{ADT}    expect:\n      {change}\n"
    assert main(["test", str(write(tmp_path, tests))]) == 1
    assert reason in capsys.readouterr().out


def test_a_failing_destination_is_retried_through_the_mock(tmp_path: Path) -> None:
    """A mock failing twice is retried on the fake clock; the output arrives and the case passes."""
    tests = f"""\
tests:
  - name: retried
    channel: inbound
    input: |
{ADT}    mocks:
      his: {{fail_times: 2}}
    expect:
      outputs:
        his: {{MSH-10: MSG1}}
"""
    assert main(["test", str(write(tmp_path, tests))]) == 0


def test_sidecar_golden_file_and_update(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A golden file is written by --update-golden, then compared; a change shows a unified diff."""
    write(tmp_path, "")
    side = tmp_path / "inbound.test.yaml"
    side.write_text(
        f"config: radbridge.yaml\ntests:\n  - name: golden\n    channel: inbound\n    input: |\n{ADT}"
        "    expect:\n      golden: {folder: golden/adt.hl7}\n"
    )
    assert main(["test", str(side)]) == 1
    assert "does not exist (run with --update-golden" in capsys.readouterr().out
    assert main(["test", str(side), "--update-golden"]) == 0
    golden = tmp_path / "golden" / "adt.hl7"
    assert golden.read_text().splitlines()[1] == "PID|1||12345^^^HOSP||DOE^JOHN"
    assert main(["test", str(tmp_path / "radbridge.yaml")]) == 0  # a config finds the sidecars naming it
    golden.write_text(golden.read_text().replace("DOE^JOHN", "DOE^JANE"))
    capsys.readouterr()
    assert main(["test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-PID|1||12345^^^HOSP||DOE^JANE" in out and "+PID|1||12345^^^HOSP||DOE^JOHN" in out


def test_bad_cases_are_reported_with_their_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A case without input, and an unknown channel, fail with a reason; the other cases still run."""
    tests = f"""\
tests:
  - name: no input
    channel: inbound
  - name: unknown channel
    channel: nowhere
    input: |
{ADT}  - name: fine
    channel: inbound
    input: |
{ADT}"""
    config = write(tmp_path, tests)
    assert main(["test", str(config), "--json"]) == 1
    results = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "give exactly one of input, input_file, dicom" in " ".join(results["tests[0]"]["problems"])
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "name: no input" in text)
    assert results["tests[0]"]["line"] == line
    assert "no enabled channel 'nowhere'" in results["unknown channel"]["problems"][0]
    assert results["fine"]["passed"]


def test_target_mapping_renders_one_template(tmp_path: Path) -> None:
    """target_mapping renders a template file alone for the input message."""
    (tmp_path / "map.hl7.j2").write_text("MSH|^~\\&|MAPPED|{{ msg['PID-5.1'] }}\n")
    tests = f"""\
tests:
  - name: mapped
    target_mapping: map.hl7.j2
    input: |
{ADT}    expect:
      outputs: {{output: {{MSH-3: MAPPED, MSH-4: DOE}}}}
"""
    assert main(["test", str(write(tmp_path, tests))]) == 0


def test_ten_cases_run_in_under_a_second(tmp_path: Path) -> None:
    """Ten cases need no network and no database server, and run quickly enough to run on every save."""
    cases = "".join(
        f"  - name: case {i}\n    channel: inbound\n    input: |\n{ADT}    expect: {{ack: AA}}\n" for i in range(10)
    )
    config = write(tmp_path, "tests:\n" + cases)
    started = time.perf_counter()
    assert main(["test", str(config)]) == 0
    # Not a benchmark: a generous bound that catches a per-case cost of a second or more.
    assert time.perf_counter() - started < 10


def test_collect_skips_hidden_and_data_folders(tmp_path: Path) -> None:
    """A folder is searched for sidecars, not its hidden folders, virtualenvs or data folder."""
    write(tmp_path, "")
    for folder in (".venv", "data", "channels"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.test.yaml").write_text("config: ../radbridge.yaml\ntests: []\n")
    assert [s.source.parent.name for s in collect(tmp_path)] == ["channels"]
