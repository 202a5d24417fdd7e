"""End to end: the durable queue drives dicom_scu to Orthanc through an outage, every instance arriving once.

The engine side (SQLite ``Store`` + ``DestinationQueue`` + ``DicomSCU`` with a real ``BuildContext``)
runs on a real Twisted reactor in a subprocess: this module is also its driver
(``python -m tests.integration.test_dicom_forward SPEC``). The driver holds the queue's sends
after ``HALFWAY`` deliveries and prints ``HALFWAY``; the test freezes Orthanc (SIGSTOP), lets the
next C-STORE go (``GO``) so that it is in flight, kills Orthanc, waits for refused attempts,
restarts it on the same ports and storage, and waits for the driver's ``SUMMARY``.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.integration.orthanc import Orthanc, running_orthanc

N = 30
HALFWAY = 10
REPO = Path(__file__).resolve().parents[2]


def make_instances(folder: Path, n: int) -> list[str]:
    """Write *n* copies of pydicom's CT_small.dcm (one new study and series, fresh SOP Instance UIDs)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    uids = []
    for i in range(n):
        uid = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
        uids.append(uid)
    return uids


# -- the driver (subprocess side) ---------------------------------------------------
class Gate:
    """Wraps a destination: while closed, the next send is held until :meth:`open`; reports each attempt."""

    def __init__(self, connector: Any, report: Callable[[str], None]) -> None:
        self.connector = connector
        self.report = report
        self.closed = False
        self.held: tuple | None = None

    def start(self) -> Any:
        """Start the wrapped connector."""
        return self.connector.start()

    def stop(self) -> Any:
        """Stop the wrapped connector."""
        return self.connector.stop()

    def send_cb(self, content: str, info: Any, done: Callable[[bool, Any], None]) -> None:
        """Send through the connector (or hold the send while closed), reporting the attempt's outcome."""

        def reported(ok: bool, value: Any) -> None:
            self.report(f"ATTEMPT {info.delivery_id} {'ok' if ok else 'failed'} {time.monotonic():.6f}")
            done(ok, value)

        if self.closed:
            self.held = (content, info, reported)
            return
        self.connector.send_cb(content, info, reported)

    def open(self) -> None:
        """Let sends through again, starting with the held one."""
        self.closed = False
        held, self.held = self.held, None
        if held is not None:
            self.connector.send_cb(*held)
            self.report("RESUMED")


def _driver(reactor: Any, spec_path: str) -> Any:
    """Queue one delivery per instance file and let the queue send them; print progress and a summary."""
    from twisted.internet import defer

    from channels.dicom.scu import DicomSCU, DicomSCUConfig
    from engine.components import BuildContext
    from engine.config.models import RetryConfig
    from engine.event import Event
    from engine.metrics import Metrics
    from engine.queue import DestinationQueue
    from engine.store.queries import thd_insert_message
    from engine.store.store import Store

    spec = json.loads(Path(spec_path).read_text())
    archive = Path(spec["archive"])

    def report(line: str) -> None:
        print(line, flush=True)

    store = Store(spec["db"], reactor)
    store.start()
    for i, uid in enumerate(spec["uids"]):
        payload = {"path": f"{i:03d}.dcm", "sop_instance_uid": uid, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2"}
        text = Event("dicom.stored", {"SOPInstanceUID": uid}, payload).text
        values = {"channel": "dicom", "received_at": time.time(), "status": "TRANSFORMED", "control_id": uid}
        values.update(message_type="dicom.stored", origin="test", raw=text.encode(), transformed=text)
        store.transact_sync(thd_insert_message, values, [("pacs", text)])
    metrics = Metrics()
    ctx = BuildContext(
        reactor=reactor, channel="dicom", component="pacs", config_dir=archive, data_dir=archive,
        metrics=metrics, store=store, archive=SimpleNamespace(root=archive),
    )  # fmt: skip
    scu = DicomSCU(DicomSCUConfig(**spec["scu"]), ctx)
    gate = Gate(scu, report)
    retry = RetryConfig(max_attempts=200, initial_delay=0.2, multiplier=2.0, max_delay=1.0)
    dq = DestinationQueue("dicom", "pacs", gate, store, reactor, retry, metrics=metrics, poll_interval=0.5)
    finished: defer.Deferred = defer.Deferred()
    outcomes: dict[int, bool] = {}

    def completed(delivery_id: int, ok: bool, reason: str) -> None:
        outcomes[delivery_id] = ok
        report(f"DONE {delivery_id} {'ok' if ok else 'error'} {time.monotonic():.6f}")
        if len(outcomes) == HALFWAY:
            gate.closed = True
            report("HALFWAY")
        if len(outcomes) == len(spec["uids"]) and not finished.called:
            finished.callback(None)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "GO":
                reactor.callFromThread(gate.open)

    threading.Thread(target=read_stdin, daemon=True).start()
    dq.listeners.append(completed)
    timeout = reactor.callLater(spec["timeout"], lambda: finished.called or finished.callback(None))

    @defer.inlineCallbacks
    def run() -> Any:
        yield defer.maybeDeferred(gate.start)
        yield dq.start()
        yield finished
        if timeout.active():
            timeout.cancel()
        dq.stop()
        yield defer.maybeDeferred(gate.stop)
        yield store.stop()
        summary = {"outcomes": {str(k): v for k, v in outcomes.items()}, "associations": scu.worker.associations}
        report("SUMMARY " + json.dumps(summary))

    return run()


# -- the test (pytest side) ------------------------------------------------------------
class Driver:
    """The driver subprocess, its stdout lines on a queue."""

    def __init__(self, spec: Path, log: Path) -> None:
        self.log_path = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_dicom_forward", str(spec)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, predicate: Callable[[list[str]], bool], timeout: float, what: str) -> list[str]:
        """Read lines until *predicate* holds for all lines seen; fail with the driver's stderr after *timeout*."""
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, min(0.2, deadline - time.monotonic()))))
            except queue.Empty:
                if time.monotonic() >= deadline or self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"driver: no {what} after {timeout:g}s:\n{self.log()}") from None
        return self.seen

    def send(self, line: str) -> None:
        """Write one line to the driver's stdin."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def log(self) -> str:
        """The driver's stderr."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Kill the driver if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """A running Orthanc, stopped at teardown."""
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


def failed_attempts(n: int) -> Callable[[list[str]], bool]:
    """A predicate: at least *n* attempts reported failed."""
    return lambda seen: sum(line.startswith("ATTEMPT") and " failed " in line for line in seen) >= n


def rate(lines: list[str], ids: list[str]) -> float:
    """Instances/s between the first and last of the successful attempts for *ids* (delivery ids)."""
    times = [float(line.split()[3]) for line in lines if line.startswith("ATTEMPT") and line.split()[1] in ids]
    return (len(times) - 1) / (max(times) - min(times)) if len(times) > 1 else 0.0


@pytest.mark.integration
def test_forward_survives_pacs_outage(pacs: Orthanc, tmp_path: Path) -> None:
    """30 instances reach Orthanc exactly once across a stop mid-transfer and a restart; all deliveries end SENT."""
    from sqlalchemy import create_engine, select

    from engine.store.schema import SENT, deliveries

    archive = tmp_path / "archive"
    uids = make_instances(archive, N)
    db = f"sqlite:///{tmp_path}/store.db"
    scu = {"ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.dicom_port, "connect_timeout": 2, "dimse_timeout": 5}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"db": db, "archive": str(archive), "uids": uids, "scu": scu, "timeout": 90}))
    driver = Driver(spec, tmp_path / "driver.log")
    try:
        driver.expect(lambda seen: "HALFWAY" in seen, 30, "HALFWAY")
        assert pacs.count() == HALFWAY
        pacs.freeze()  # the next C-STORE goes out and gets no answer
        driver.send("GO")
        driver.expect(lambda seen: "RESUMED" in seen, 10, "RESUMED")
        time.sleep(0.3)
        pacs.stop(kill=True)  # dies with that C-STORE in flight
        driver.expect(failed_attempts(3), 30, "failed attempts while Orthanc is down")  # in flight + refused
        pacs.start()
        lines = driver.expect(lambda seen: any(s.startswith("SUMMARY") for s in seen), 60, "SUMMARY")
        assert driver.proc.wait(timeout=15) == 0, driver.log()
    finally:
        driver.stop()
    summary = json.loads(next(s for s in lines if s.startswith("SUMMARY"))[len("SUMMARY ") :])
    assert len(summary["outcomes"]) == N and all(summary["outcomes"].values())
    assert summary["associations"] >= 2  # one before the outage, at least one after
    engine = create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.status, deliveries.c.attempts, deliveries.c.response)).all()
    engine.dispose()
    assert [r.status for r in rows] == [SENT] * N
    assert {r.response for r in rows} == {"C-STORE status 0x0000"}
    assert max(r.attempts for r in rows) > 1  # the outage hit a delivery mid-transfer
    stored = pacs.instances()
    assert sorted(stored) == sorted(uids) and len(stored) == N  # every instance, each exactly once
    done = [line.split()[1] for line in lines if line.startswith("DONE")]
    before, after = rate(lines, done[:HALFWAY]), rate(lines, done[HALFWAY + 1 :])
    print(f"\nC-STORE to Orthanc, one association: {before:.0f}/s before the outage, {after:.0f}/s after it")


if __name__ == "__main__":
    from twisted.internet import task

    task.react(_driver, sys.argv[1:])
