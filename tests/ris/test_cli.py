"""``radbridge ris orders|order|worklist|unmatched`` on a populated store (in process, through engine.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from engine.cli import main
from engine.store.store import Store
from ris_core import images, orders
from tests.ris import messages as m
from tests.ris.conftest import NOW, apply, make_rt


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config whose SQLite store holds three orders (one canceled, one started), a merge and an unmatched study."""
    db = tmp_path / "ris.db"
    path = tmp_path / "radbridge.yaml"
    path.write_text(f"data_dir: {tmp_path}\ndatabase: sqlite:///{db}\nmetrics: {{enabled: false}}\n")
    store = Store(f"sqlite:///{db}", Clock(), writer_mode="inline")
    rt = make_rt(station_aes={"CT": ["CT1"]})
    apply(store, rt, m.orm(), message_id=1)
    apply(store, rt, m.orm("O2", accession="ACC101", placer="PL101", steps=("SPS101",), modality="MR"), message_id=2)
    apply(store, rt, m.orm("O3", accession="ACC102", placer="PL102", steps=("SPS102",), patient="P300"), message_id=3)
    apply(store, rt, m.orm("O4", control="CA", accession="ACC101", placer="PL101"), message_id=4)
    oid = store.read_sync(orders.thd_find_order, accession="ACC102")["id"]
    store.transact_sync(orders.thd_apply, oid, "START", source="1.2.3.mpps", now=NOW)
    store.transact_sync(images.thd_image_stored, {"StudyInstanceUID": "1.2.3.77", "AccessionNumber": "ZZ9"},
                        message_id=9, now=NOW)  # fmt: skip
    store.engine.dispose()
    return path


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``radbridge ARGS``: (exit code, stdout)."""
    code = main(list(args))
    return code, capsys.readouterr().out


def test_orders_list(config: Path, capsys: pytest.CaptureFixture) -> None:
    """``ris orders`` lists ids, accessions and states (newest first), filtered by state or patient; no names."""
    code, out = run(capsys, "ris", "orders", "-c", str(config))
    assert code == 0 and "3 order(s)" in out and "DOE" not in out
    assert out.index("ACC102") < out.index("ACC100") and "CANCELED" in out and "IN_PROGRESS" in out
    code, out = run(capsys, "ris", "orders", "-c", str(config), "--state", "canceled", "--json")
    assert [r["accession"] for r in json.loads(out)] == ["ACC101"]
    code, out = run(capsys, "ris", "orders", "-c", str(config), "--patient-id", "P300", "--json")
    assert [(r["accession"], r["patient_id"]) for r in json.loads(out)] == [("ACC102", "P300")]


def test_order_detail(config: Path, capsys: pytest.CaptureFixture) -> None:
    """``ris order ACC`` shows the patient (with name), steps, MPPS, reports and the history with message ids."""
    code, out = run(capsys, "ris", "order", "-c", str(config), "ACC101", "--json")
    detail = json.loads(out)
    assert code == 0 and detail["state"] == "CANCELED" and detail["patient"]["patient_id"] == "P100"
    assert [s["sps_id"] for s in detail["sps"]] == ["SPS101"] and detail["mpps"] == [] and detail["reports"] == []
    assert [(h["event"], h["to_state"], h["message_id"]) for h in detail["history"]] == [
        ("NW_SCHEDULED", "SCHEDULED", 2), ("CANCEL", "CANCELED", 4),
    ]  # fmt: skip
    code, out = run(capsys, "ris", "order", "-c", str(config), "ACC102")
    assert code == 0 and "DOE^JOHN" in out and "1.2.3.mpps" in out and "SCHEDULED       -> IN_PROGRESS" in out
    code, _ = run(capsys, "ris", "order", "-c", str(config), "NOPE")
    assert code == 1


def test_worklist(config: Path, capsys: pytest.CaptureFixture) -> None:
    """``ris worklist`` shows open steps only, filtered by modality and date."""
    code, out = run(capsys, "ris", "worklist", "-c", str(config), "--json")
    assert code == 0 and sorted(r["sps_id"] for r in json.loads(out)) == ["SPS100", "SPS102"]
    code, out = run(capsys, "ris", "worklist", "-c", str(config), "--modality", "ct", "--date", "20240305")
    assert "2 step(s)" in out and "CT1" in out and "DOE" not in out
    code, out = run(capsys, "ris", "worklist", "-c", str(config), "--date", "20990101")
    assert "0 step(s)" in out


def test_unmatched(config: Path, capsys: pytest.CaptureFixture) -> None:
    """``ris unmatched`` lists studies no order matched."""
    code, out = run(capsys, "ris", "unmatched", "-c", str(config))
    assert code == 0 and "1.2.3.77" in out and "ZZ9" in out and "1 unmatched study" in out
    code, out = run(capsys, "ris", "unmatched", "-c", str(config), "--json")
    assert [r["study_uid"] for r in json.loads(out)] == ["1.2.3.77"]
