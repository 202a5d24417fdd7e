"""Modality Worklist C-FIND latency: radbridge (``ris_sps`` in SQLite, 100,000 open steps) against dcmtk wlmscpfs.

Load: N open scheduled procedure steps (default 100,000) inserted with SQLAlchemy Core into a
migrated SQLite store (``engine.store.store.Store``), spread over 10 modalities (weighted like a
hospital's: CR/CT/MR/US most, PT least), 30 days, 20 station AE titles (some steps on two), with
patient names, accession numbers and a rendered worklist item (DICOM JSON) per row. Two queries:

* **accession**: AccessionNumber = one value (1 hit);
* **modality+day**: ScheduledProcedureStepSequence Modality = PT and StartDate = one day (≈50 hits);

both asking for the usual return keys (patient, order and step attributes). Measured:

(a), (b) p50/p99 over ``--queries`` C-FINDs on one open association with a pynetdicom SCU;
(c) end-to-end ``findscu -W`` process time (median of ``--runs``; its ~30 ms start-up included);
(d) dcmtk ``wlmscpfs`` serving the first ``--wl-files`` (10,000) rows as .wl files made with
    pydicom from the same items, with the same two findscu queries.

radbridge is the real engine: ``radbridge run`` (a subprocess) on a config with one ``dicom_scp``
channel (``worklist: true``) and the ``ris:`` service over the SQLite file built here, so the
C-FIND goes through DicomSCP, ``channels.dicom.mwl`` and ``RisService.worklist``. Every dcmtk
process runs with ``TCP_NODELAY=1``. Everything listens on 127.0.0.1, on free ports; every process
started here is stopped in ``finally``.

Usage::

    python bench/mwl_query.py            # 100,000 steps, 10,000 .wl files
    python bench/mwl_query.py --quick    # 20,000 steps, 2,000 .wl files, fewer runs
    python bench/mwl_query.py --json     # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procs import HOST, free_port, stop, wait_port  # noqa: E402 - bench/ is on sys.path when a script runs

ENV = {**os.environ, "TCP_NODELAY": "1"}
TARGET_ACCESSION_P50_MS = 10.0
TARGET_MODALITY_DAY_P50_MS = 50.0
TARGET_SPEEDUP = 10.0
MODALITIES = {"CR": 22, "CT": 20, "MR": 15, "US": 15, "DX": 10, "MG": 8, "NM": 4, "XA": 3, "RF": 1.5, "PT": 1.5}
STATIONS = {"CR": ["CR1", "CR2", "CR3"], "CT": ["CT1", "CT2", "CT3"], "MR": ["MR1", "MR2"], "US": ["US1", "US2", "US3"],
            "DX": ["DX1", "DX2"], "MG": ["MG1"], "NM": ["NM1"], "XA": ["XA1"], "RF": ["RF1"], "PT": ["PT1", "PT2"]}  # fmt: skip
FAMILY = ["Smith", "Jones", "Müller", "García", "Nguyen", "Kowalski", "Dubois", "Rossi", "Andersson", "Öztürk",
          "Brown", "Wilson", "Taylor", "Novák", "Silva", "Kim", "Cohen", "Murphy", "Jansen", "Sørensen"]  # fmt: skip
GIVEN = ["Anna", "John", "Jürgen", "María", "Li", "Olga", "Pierre", "Giulia", "Lars", "Ayşe", "James", "Emma"]
DAYS = [f"202403{d:02d}" for d in range(1, 31)]
SPS_RETURN = ("ScheduledStationAETitle", "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID",
              "ScheduledProcedureStepDescription", "ScheduledPerformingPhysicianName", "ScheduledProcedureStepStatus")  # fmt: skip
TOP_RETURN = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "RequestedProcedureID",
              "RequestedProcedureDescription", "ReferringPhysicianName")  # fmt: skip


# --- data -------------------------------------------------------------------------------------


def element(keyword: str, *values: Any) -> tuple[str, dict[str, Any]]:
    """(tag, DICOM JSON element) of *keyword* with *values* (PN strings become Alphabetic groups)."""
    from archive.matching import keyword_vr

    tag, vr = keyword_vr(keyword)  # type: ignore[misc]
    el: dict[str, Any] = {"vr": vr}
    if values:
        el["Value"] = [{"Alphabetic": v} for v in values] if vr == "PN" else list(values)
    return f"{tag:08X}", el


def item_json(r: dict[str, Any], rng: random.Random) -> str:
    """The worklist item the ORM template renders for row *r*, as DICOM JSON."""
    code = dict([element("CodeValue", r["code"]), element("CodingSchemeDesignator", "LOCAL"),
                 element("CodeMeaning", r["description"])])  # fmt: skip
    sps = dict([
        element("Modality", r["modality"]), element("ScheduledStationAETitle", *r["station_ae"].split("\\")),
        element("ScheduledProcedureStepStartDate", r["start_date"]),
        element("ScheduledProcedureStepStartTime", r["start_time"][:6]),
        element("ScheduledPerformingPhysicianName", r["performing_physician"]),
        element("ScheduledProcedureStepDescription", r["description"]), element("ScheduledProcedureStepID", r["sps_id"]),
        element("ScheduledStationName", r["station_name"]), element("ScheduledProcedureStepLocation", "RAD-1"),
        element("ScheduledProcedureStepStatus", "SCHEDULED"), ("00400008", {"vr": "SQ", "Value": [code]}),
    ])  # fmt: skip
    item = dict([
        element("SpecificCharacterSet", "ISO_IR 192"), element("AccessionNumber", r["accession"]),
        element("ReferringPhysicianName", "Welby^Marcus"), element("PatientName", r["patient_name"]),
        element("PatientID", r["patient_id"]), element("IssuerOfPatientID", "HOSP"),
        element("PatientBirthDate", f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"),
        element("PatientSex", rng.choice("MF")), element("StudyInstanceUID", r["study_uid"]),
        element("RequestedProcedureDescription", r["description"]), ("00321064", {"vr": "SQ", "Value": [code]}),
        element("RequestedProcedureID", r["requested_procedure_id"]), element("RequestedProcedurePriority", "ROUTINE"),
        element("AdmissionID", f"V{r['patient_id']}"), element("CurrentPatientLocation", "WARD 3"),
        ("00400100", {"vr": "SQ", "Value": [sps]}),
    ])  # fmt: skip
    return json.dumps(dict(sorted(item.items())), ensure_ascii=False)


def make_rows(n: int, seed: int = 4) -> list[dict[str, Any]]:
    """*n* ``ris_sps`` rows (without ids and order references), deterministic for *seed*."""
    rng = random.Random(seed)
    mods, weights = list(MODALITIES), list(MODALITIES.values())
    rows = []
    for i in range(n):
        modality = rng.choices(mods, weights)[0]
        stations = STATIONS[modality]
        station = rng.choice(stations)
        if len(stations) > 1 and rng.random() < 0.1:
            station = "\\".join(stations[:2])
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        slot = rng.randrange(48)
        r = {
            "sps_id": f"S{i:07d}", "status": "SCHEDULED", "modality": modality, "station_ae": station,
            "station_name": station.split("\\")[0] + "ROOM", "start_date": rng.choice(DAYS),
            "start_time": f"{7 + slot // 4:02d}{slot % 4 * 15:02d}00.000000", "description": f"{modality} EXAM",
            "performing_physician": "House^Gregory", "patient_id": f"P{rng.randrange(n * 6 // 10):07d}", "issuer": "HOSP",
            "patient_name": name, "patient_name_upper": name.upper(), "accession": f"A{i:07d}",
            "requested_procedure_id": f"R{i:07d}", "study_uid": f"1.2.826.0.1.3680043.10.543.{i + 1}",
            "code": f"{modality}{rng.randrange(20):02d}",
        }  # fmt: skip
        r["item"] = item_json(r, rng)
        rows.append(r)
    return rows


def build_store(path: Path, rows: list[dict[str, Any]]) -> None:
    """A migrated SQLite store holding a patient, a SCHEDULED order and a step per row."""
    from twisted.internet.task import Clock

    from engine.store.store import Store
    from ris_core.schema import ris_orders, ris_patients, ris_sps

    store = Store(f"sqlite:///{path}", Clock(), writer_mode="inline")
    now = time.time()
    stamps = {"created_at": now, "updated_at": now}
    with store.engine.begin() as conn:
        patients = {r["patient_id"]: r["patient_name"] for r in rows}
        pids = {pid: n + 1 for n, pid in enumerate(patients)}
        conn.execute(ris_patients.insert(), [
            {"id": pids[pid], "patient_key": f"{pid}^HOSP", "patient_id": pid, "issuer": "HOSP", "name": name,
             "name_upper": name.upper(), **stamps} for pid, name in patients.items()
        ])  # fmt: skip
        conn.execute(ris_orders.insert(), [
            {"id": i + 1, "patient_ref": pids[r["patient_id"]], "accession": r["accession"], "study_uid": r["study_uid"],
             "requested_procedure_id": r["requested_procedure_id"], "modality": r["modality"], "state": "SCHEDULED",
             "reconcile": 0, **stamps} for i, r in enumerate(rows)
        ])  # fmt: skip
        columns = {c.name for c in ris_sps.columns}
        conn.execute(ris_sps.insert(), [
            {**{k: v for k, v in r.items() if k in columns}, "order_ref": i + 1, **stamps} for i, r in enumerate(rows)
        ])  # fmt: skip
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    store.engine.dispose()


def write_wl_files(folder: Path, rows: list[dict[str, Any]]) -> None:
    """One .wl file per row, made with pydicom from the row's item, as wlmscpfs expects (with a lockfile)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    for n, r in enumerate(rows):
        ds = Dataset.from_json(r["item"])
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f"item{n:06d}.wl", enforce_file_format=True)


# --- the radbridge SCP (subprocess) -----------------------------------------------------------


def engine_config(tmp: Path, db: Path, port: int) -> Path:
    """A radbridge config serving the worklist from *db*: one ``dicom_scp`` channel, the RIS, no metrics."""
    import yaml

    config = {
        "data_dir": str(tmp / "data"),
        "database": f"sqlite:///{db}",
        "metrics": {"enabled": False},
        "logging": {"level": "INFO"},  # as shipped: one line per C-FIND (counts and status, no PHI)
        "ris": {},
        "channels": [{
            "name": "modality",
            "source": {"type": "dicom_scp", "ae_title": "RADBRIDGE", "host": HOST, "port": port,
                       "storage": False, "query_retrieve": False, "worklist": True},
            "destinations": [{"name": "ris", "type": "ris"}],
        }],
    }  # fmt: skip
    path = tmp / "radbridge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_engine(tmp: Path, db: Path) -> tuple[subprocess.Popen, int]:
    """``radbridge run`` on :func:`engine_config` (the real DicomSCP, RisService and worklist SQL); (process, port)."""
    port = free_port()
    config = engine_config(tmp, db, port)
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        wait_port(port, proc)
    except Exception:
        stop(proc)
        raise RuntimeError(f"radbridge did not start: {(tmp / 'serve.log').read_text()[-2000:]}") from None
    return proc, port


# --- measuring ----------------------------------------------------------------------------------


def queries(rows: list[dict[str, Any]], wl_rows: int) -> dict[str, dict[str, Any]]:
    """The two queries: top-level and step keys (a value, or empty for a return key)."""
    accession = rows[min(1234, wl_rows - 1)]["accession"]
    return {
        "accession": {"top": {"AccessionNumber": accession}, "sps": {"Modality": "", "ScheduledProcedureStepStartDate": ""}},
        "modality_day": {"top": {"AccessionNumber": ""}, "sps": {"Modality": "PT", "ScheduledProcedureStepStartDate": DAYS[9]}},
    }  # fmt: skip


def dataset(q: dict[str, Any]) -> Any:
    """The pynetdicom request identifier of query *q*."""
    from pydicom.dataset import Dataset

    ds, item = Dataset(), Dataset()
    for keyword in TOP_RETURN:
        setattr(ds, keyword, "")
    for keyword, value in q["top"].items():
        setattr(ds, keyword, value)
    for keyword in SPS_RETURN:
        setattr(item, keyword, "")
    for keyword, value in q["sps"].items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def findscu_args(q: dict[str, Any], port: int, aet: str, out: Path | None = None) -> list[str]:
    """``findscu -W`` for query *q* (``-X -od out`` when *out*)."""
    keys = [*(f"{k}={v}" if v else k for k, v in q["top"].items()), *TOP_RETURN]
    keys += [f"ScheduledProcedureStepSequence[0].{k}={v}" if v else f"ScheduledProcedureStepSequence[0].{k}"
             for k, v in {**q["sps"], **dict.fromkeys(SPS_RETURN, "")}.items()]  # fmt: skip
    extract = ["-X", "-od", str(out)] if out else []
    return ["findscu", "-W", "-aet", "BENCHSCU", "-aec", aet, *extract, *[a for k in keys for a in ("-k", k)], HOST, str(port)]  # fmt: skip


def time_findscu(q: dict[str, Any], servers: dict[str, tuple[int, str]], runs: int, tmp: Path) -> dict[str, Any]:
    """Per server: (median ms of *runs* findscu processes, hits counted with ``-X`` on a first, untimed run).

    The servers take turns run by run, so load from elsewhere on the machine falls on both alike.
    """
    hits, times = {}, {key: [] for key in servers}
    for key, (port, aet) in servers.items():
        out = tmp / f"rsp-{key}-{time.monotonic_ns()}"
        out.mkdir()
        subprocess.run(findscu_args(q, port, aet, out), env=ENV, check=True, capture_output=True, timeout=120)
        hits[key] = len(list(out.glob("rsp*.dcm")))
    for _ in range(runs):
        for key, (port, aet) in servers.items():
            times[key].append(run_timed(findscu_args(q, port, aet)))
    return {key: (statistics.median(times[key]), hits[key]) for key in servers}


def run_timed(args: list[str], timeout: float = 120.0) -> float:
    """Milliseconds from starting *args* to its exit, which a blocking ``wait()`` sees at once.

    Not ``subprocess.run(timeout=...)``: with a timeout it polls, sleeping 1, 2, 4 ... 50 ms
    between looks, so every time came out rounded up to about 31, 63, 113, 163 ... ms. A timer
    kills a process still running after *timeout* seconds instead.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        code = proc.wait()
    finally:
        watchdog.cancel()
    elapsed = (time.perf_counter() - started) * 1000
    if code != 0:
        raise subprocess.CalledProcessError(code, args)
    return elapsed


def time_association(qs: dict[str, dict[str, Any]], port: int, n: int) -> dict[str, dict[str, float]]:
    """p50/p99 ms and hits of each query over one open pynetdicom association (after 10 warm-ups)."""
    from pynetdicom import AE, _config, evt
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    from channels.dicom.common import set_nodelay  # also turns pynetdicom's per-PDU log handlers off

    # pynetdicom pretty-prints every response identifier for its debug log whatever the level (PHI,
    # and ~1 ms per response): an SCU handling patient data turns this off.
    _config.LOG_RESPONSE_IDENTIFIERS = False
    ae = AE("BENCHSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 30, 60, 60
    opened = [(evt.EVT_CONN_OPEN, lambda event: set_nodelay(event.assoc.dul.socket.socket))]
    assoc = ae.associate(HOST, port, ae_title="RADBRIDGE", evt_handlers=opened)
    if not assoc.is_established:
        raise RuntimeError("association with the radbridge SCP failed")
    results = {}
    try:
        for name, q in qs.items():
            ds, times, hits = dataset(q), [], 0
            for i in range(n + 10):
                started = time.perf_counter()
                responses = list(assoc.send_c_find(ds, ModalityWorklistInformationFind))
                elapsed = (time.perf_counter() - started) * 1000
                if responses[-1][0].Status != 0:
                    raise RuntimeError(f"{name}: status 0x{responses[-1][0].Status:04X}")
                if i >= 10:
                    times.append(elapsed)
                    hits = len(responses) - 1
            times.sort()
            results[name] = {"p50_ms": statistics.median(times), "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
                             "hits": hits}  # fmt: skip
    finally:
        assoc.release()
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the data, start both servers, measure; every process started here is stopped."""
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="rb-mwl-bench-") as tmpdir:
        tmp = Path(tmpdir)
        t0 = time.perf_counter()
        rows = make_rows(args.rows)
        build_store(tmp / "ris.db", rows)
        write_wl_files(tmp / "wl" / "WLSCP", rows[: args.wl_files])
        print(
            f"  data: {args.rows} steps, {args.wl_files} .wl files in {time.perf_counter() - t0:.1f}s", file=sys.stderr
        )
        qs = queries(rows, args.wl_files)
        try:
            rb, rb_port = start_engine(tmp, tmp / "ris.db")
            procs.append(rb)
            wl_port = free_port()
            wl = subprocess.Popen(["wlmscpfs", "-dfp", str(tmp / "wl"), str(wl_port)], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            procs.append(wl)
            wait_port(wl_port, wl)
            assoc = time_association(qs, rb_port, args.queries)
            servers = {"radbridge": (rb_port, "RADBRIDGE"), "wlmscpfs": (wl_port, "WLSCP")}
            e2e = {name: time_findscu(q, servers, args.runs, tmp) for name, q in qs.items()}
        finally:
            for proc in procs:
                stop(proc)
    return {"assoc": assoc, "e2e": e2e}


def summarise(res: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The flat figures of the JSON line."""
    a, e = res["assoc"], res["e2e"]
    out: dict[str, Any] = {"rows": args.rows, "wl_files": args.wl_files, "queries": args.queries, "runs": args.runs}
    for name in ("accession", "modality_day"):
        out[f"{name}_p50_ms"] = round(a[name]["p50_ms"], 2)
        out[f"{name}_p99_ms"] = round(a[name]["p99_ms"], 2)
        out[f"{name}_hits"] = a[name]["hits"]
        (rb_ms, rb_hits), (wl_ms, wl_hits) = e[name]["radbridge"], e[name]["wlmscpfs"]
        out[f"{name}_findscu_ms"] = round(rb_ms, 1)
        out[f"{name}_wlmscpfs_findscu_ms"] = round(wl_ms, 1)
        out[f"{name}_findscu_hits"], out[f"{name}_wlmscpfs_hits"] = rb_hits, wl_hits
        out[f"{name}_speedup_vs_wlmscpfs"] = round(wl_ms / rb_ms, 2)
    out["speedup_vs_wlmscpfs"] = min(out["accession_speedup_vs_wlmscpfs"], out["modality_day_speedup_vs_wlmscpfs"])
    out["targets"] = {
        "accession_p50_ms": [TARGET_ACCESSION_P50_MS, out["accession_p50_ms"] <= TARGET_ACCESSION_P50_MS],
        "modality_day_p50_ms": [TARGET_MODALITY_DAY_P50_MS, out["modality_day_p50_ms"] <= TARGET_MODALITY_DAY_P50_MS],
        "speedup_vs_wlmscpfs": [TARGET_SPEEDUP, out["speedup_vs_wlmscpfs"] >= TARGET_SPEEDUP],
    }
    out["nproc"], out["python"] = os.cpu_count(), platform.python_version()
    return out


def print_table(s: dict[str, Any]) -> None:
    """The human-readable report."""
    print(f"\nModality Worklist C-FIND: radbridge over {s['rows']:,} open steps (SQLite), dcmtk wlmscpfs over "
          f"{s['wl_files']:,} .wl files; {s['nproc']} CPUs\n")  # fmt: skip
    head = f"{'query':<14} {'assoc p50':>10} {'assoc p99':>10} {'hits':>5} {'findscu rb':>11} {'hits':>5} {'findscu wlm':>12} {'hits':>5} {'ratio':>6}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for name in ("accession", "modality_day"):
        print(f"{name:<14} {s[f'{name}_p50_ms']:>8.2f}ms {s[f'{name}_p99_ms']:>8.2f}ms {s[f'{name}_hits']:>5}"
              f" {s[f'{name}_findscu_ms']:>9.1f}ms {s[f'{name}_findscu_hits']:>5} {s[f'{name}_wlmscpfs_findscu_ms']:>10.1f}ms"
              f" {s[f'{name}_wlmscpfs_hits']:>5} {s[f'{name}_speedup_vs_wlmscpfs']:>5.1f}x")  # fmt: skip
    print()
    for key, label in (("accession_p50_ms", "accession p50 (ms)"), ("modality_day_p50_ms", "modality+day p50 (ms)"),
                       ("speedup_vs_wlmscpfs", "findscu speed-up vs wlmscpfs")):  # fmt: skip
        target, ok = s["targets"][key]
        print(
            f"  {label:<32} {s[key]:>8.2f}   target {'<=' if 'p50' in key else '>='} {target:g}  {'PASS' if ok else 'MISS'}"
        )


def main(argv: list[str] | None = None) -> int:
    """Parse options and run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rows", type=int, default=100_000, help="open scheduled steps in the store")
    p.add_argument("--wl-files", type=int, default=10_000, help=".wl files for wlmscpfs (the first rows)")
    p.add_argument("--queries", type=int, default=200, help="C-FINDs per query on the open association")
    p.add_argument("--runs", type=int, default=20, help="findscu processes per query and server")
    p.add_argument("--quick", action="store_true", help="20,000 steps, 2,000 .wl files, 100 queries, 7 runs")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    for tool in ("findscu", "wlmscpfs"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian package dcmtk)", file=sys.stderr)
            return 2
    if args.quick:
        args.rows, args.wl_files, args.queries, args.runs = 20_000, 2_000, 100, 7
    summary = summarise(run(args), args)
    print_table(summary)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
