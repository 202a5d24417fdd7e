"""The worklist benchmark still runs end to end (tiny sizes; no timing is asserted: numbers live in docs/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_mwl_bench_runs_and_reports_its_keys() -> None:
    """bench/mwl_query.py against radbridge run and wlmscpfs: the JSON line has the issue's keys and real hits."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mwl_query.py"), "--rows", "6000", "--wl-files", "60", "--queries", "3",
         "--runs", "1", "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("accession_p50_ms", "modality_day_p50_ms", "speedup_vs_wlmscpfs"):
        assert result[key] > 0
    assert result["accession_hits"] == result["accession_findscu_hits"] == result["accession_wlmscpfs_hits"] == 1
    assert result["modality_day_hits"] == result["modality_day_findscu_hits"] >= 1
