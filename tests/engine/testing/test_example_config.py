"""The test cases shipped with config.example.yaml pass, and every example channel has one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config.validate import validate_config
from engine.testing.cases import collect
from engine.testing.runner import run_one

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config.example.yaml"
SUITES = collect(EXAMPLE)
CASES = [(suite, lc) for suite in SUITES for lc in suite.cases]


def test_the_example_suites_read_cleanly() -> None:
    """config.example.test.yaml names config.example.yaml and has no unreadable case."""
    assert [s.source.name for s in SUITES if s.cases] == ["config.example.test.yaml"]
    assert all(not s.issues for s in SUITES)


@pytest.mark.parametrize(("suite", "lc"), CASES, ids=[lc.case.name for _, lc in CASES])
def test_example_case(suite, lc) -> None:
    """One shipped case, run offline as ``radbridge test config.example.yaml`` runs it."""
    result = run_one(suite, lc)
    assert result.passed, result.format()


def test_every_example_channel_is_tested() -> None:
    """Each channel of the example is fed by a case, or one of its destinations is asserted on."""
    vc = validate_config(EXAMPLE, check_ports=False)
    covered: set[str] = set()
    for _, lc in CASES:
        case = lc.case
        covered |= {case.channel or ""} | {step.channel for step in case.before}
        named = set(case.expect.outputs) | set(case.expect.no_output_from) | set(case.expect.golden)
        covered |= {spec.config.name for spec in vc.channels for d in spec.destinations if d.config.name in named}
    assert {spec.config.name for spec in vc.channels} <= covered


def test_pytest_collects_sidecar_files(tmp_path: Path) -> None:
    """The pytest plugin turns each case of a *.test.yaml into a test item; a failing case shows its reason."""
    (tmp_path / "radbridge.yaml").write_text(
        "data_dir: ./data\nmetrics: {enabled: false}\nchannels:\n  - name: in\n    source: {type: memory}\n"
        "    destinations: [{name: out, type: file_writer, directory: ./out}]\n"
    )
    adt = "      MSH|^~\\&|HIS|HOSP|RB|RAD|20261201120000||ADT^A04|M1|P|2.3.1\n      PID|1||1||DOE^JOHN\n"
    (tmp_path / "in.test.yaml").write_text(
        "config: radbridge.yaml\ntests:\n"
        f"  - name: good\n    channel: in\n    input: |\n{adt}    expect: {{outputs: {{out: {{PID-5.1: DOE}}}}}}\n"
        f"  - name: bad\n    channel: in\n    input: |\n{adt}    expect: {{outputs: {{out: {{PID-5.1: ROE}}}}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 1 passed" in proc.stdout
    assert "bad [" in proc.stdout and "out PID-5.1: expected 'ROE', got 'DOE'" in proc.stdout
