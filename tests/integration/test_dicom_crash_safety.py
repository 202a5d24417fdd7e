"""kill -9 of ``radbridge run`` in the middle of a study sent over the storage fast path: every instance answered
with success is archived and indexed, nothing partial is, and the resent study completes the archive exactly."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import _config
from pynetdicom.sop_class import CTImageStorage

from tests.integration.dicom import dicom_config, make_study, scu_associate
from tests.integration.helpers import EngineProcess, free_port, run_cli, wait_until

pytestmark = pytest.mark.integration
TOTAL, KILL_AFTER = 200, 60


def send_all(port: int, files: list[Path], answered: list[tuple[str, int]]) -> None:
    """C-STORE *files* in order over one association, appending (SOP Instance UID, status) for each answer."""
    assoc = scu_associate(port, (CTImageStorage,), aet="CRASHSCU")
    try:
        for path in files:
            status = assoc.send_c_store(path)
            if "Status" not in status:  # the association died under us
                return
            answered.append((dcmread(path, stop_before_pixels=True).SOPInstanceUID, int(status.Status)))
    finally:
        if assoc.is_established:
            assoc.release()


def indexed(db: Path) -> dict[str, tuple[str, int, str]]:
    """SOP Instance UID → (path, size, sha256) of every index row (read while the engine is down)."""
    with sqlite3.connect(db) as conn:
        return {
            r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT sop_uid, path, size, sha256 FROM dicom_instances")
        }


def test_kill9_mid_study_loses_no_answered_instance(
    tmp_path: Path, engine_factory: Callable[..., EngineProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answered before the kill → archived and indexed; after restart and a resend of all, exactly one clean copy each."""
    started = time.monotonic()
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    files = make_study(tmp_path / "study", TOTAL, series=3)
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "radbridge.yaml"
    config.write_text(dicom_config(tmp_path / "data", port, metrics_port))
    engine = engine_factory(config).start_ready()

    answered: list[tuple[str, int]] = []
    sender = threading.Thread(target=send_all, args=(port, files, answered), daemon=True)
    sender.start()
    wait_until(lambda: len(answered) >= KILL_AFTER or not sender.is_alive(), 60, what=f"{KILL_AFTER} answers")
    engine.kill9()
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert KILL_AFTER <= len(answered) < TOTAL, "the kill came mid-study"
    assert {status for _, status in answered} == {0x0000}

    rows = indexed(tmp_path / "data" / "radbridge.db")
    archive = tmp_path / "data" / "archive"
    missing = [uid for uid, _ in answered if uid not in rows]
    assert not missing, f"{len(missing)} answered instances not indexed"
    verify = run_cli("archive", "verify", "-c", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr  # every indexed file whole, checksum right
    stored_not_answered = len(rows) - len(answered)
    assert 0 <= stored_not_answered <= 1

    engine.start_ready()
    resent: list[tuple[str, int]] = []
    send_all(port, files, resent)
    assert len(resent) == TOTAL
    statuses = dict(resent)
    assert {statuses[uid] for uid, _ in answered} == {0xB006}, "answered ones are kept duplicates"
    assert set(statuses.values()) <= {0x0000, 0xB006}
    engine.terminate()

    rows = indexed(tmp_path / "data" / "radbridge.db")
    assert len(rows) == TOTAL
    verify = run_cli("archive", "verify", "-c", str(config), "--orphans")
    assert verify.returncode == 0, verify.stdout + verify.stderr  # and no file outside the index
    files_on_disk = [p for p in archive.rglob("*.dcm") if ".incoming" not in p.parts]
    assert len(files_on_disk) == TOTAL
    print(f"\ndicom crash test: {len(answered)} answered before kill -9, {stored_not_answered} stored but not "
          f"answered, resend: {sum(s == 0xB006 for s in statuses.values())} kept, "
          f"{sum(s == 0 for s in statuses.values())} stored ({time.monotonic() - started:.1f}s)")  # fmt: skip
