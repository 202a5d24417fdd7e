"""DICOM C-STORE throughput: radbridge (archive + index) against dcmtk storescp, Orthanc and pynetdicom.

Load: N distinct instances (pydicom's CT_small.dcm, 39 KB, with fresh Study/Series/SOP UIDs),
sent by dcmtk ``storescu`` over **one association**, then over **4 concurrent associations**
(N/4 each, one storescu process per association). Every dcmtk tool and Orthanc runs with
``TCP_NODELAY=1`` (Debian's dcmtk leaves Nagle on otherwise: each store then stalls ~40 ms).

Servers, each a separate process on 127.0.0.1, all writing every instance to disk:

* radbridge: ``radbridge run`` with one ``dicom_scp`` channel: every instance checksummed,
  fsynced, linked into the archive, indexed (patient/study/series/instance rows) and recorded
  as a message in the SQLite store before the C-STORE response;
* dcmtk ``storescp -od DIR``;
* Orthanc (Debian package) with its default storage (SQLite index, files on disk);
* pynetdicom's ``storescp`` app (``python -m pynetdicom storescp -od DIR``).

Every server gets a warm-up, then R rounds (round-robin over the servers); the table shows
medians. Time is measured around the storescu processes (their start-up, ~30 ms, included).

Usage::

    python bench/dicom_store.py            # 500 instances, 3 rounds
    python bench/dicom_store.py --quick    # 100 instances, 1 round
    python bench/dicom_store.py --json     # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import Any

from procs import HOST, cpu_seconds, free_port, radbridge_command, stop, wait_port  # noqa: E402 - bench/ is on sys.path when a script runs

TARGET_VS_ORTHANC = 1.2
TARGET_VS_DCMTK = 0.45
ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_instances(folder: Path, n: int) -> list[Path]:
    """*n* copies of CT_small with fresh UIDs (10 series per study of 50 instances)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    study = series = None
    for i in range(n):
        if i % 500 == 0:
            study = generate_uid()
        if i % 50 == 0:
            series = generate_uid()
        ds = src.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i % 50 + 1
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class Server:
    """One server under test: its process, port, called AE title and results."""

    def __init__(self, key: str, label: str, aet: str, port: int, proc: subprocess.Popen, store_dir: Path):
        self.key, self.label, self.aet, self.port, self.proc, self.store_dir = key, label, aet, port, proc, store_dir
        self.runs: dict[int, list[dict[str, Any]]] = {}

    def send(self, files: list[Path], conns: int) -> float:
        """Send *files* over *conns* concurrent storescu associations; return the wall time."""
        chunks = [files[i::conns] for i in range(conns)]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["storescu", "-aec", self.aet, "-aet", "BENCHSCU", HOST, str(self.port), *map(str, chunk)],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for chunk in chunks
        ]
        failed = []
        for p in procs:
            _, err = p.communicate(timeout=600)
            if p.returncode != 0:
                failed.append(err.decode(errors="replace")[-500:])
        elapsed = time.perf_counter() - started
        if failed:
            raise RuntimeError(f"{self.label}: storescu failed: {failed[0]}")
        return elapsed


def start_radbridge(tmp: Path) -> Server:
    """``radbridge run`` with a dicom_scp channel archiving into tmp."""
    port, metrics = free_port(), free_port()
    cfg_dir = tmp / "radbridge"
    cfg_dir.mkdir()
    (cfg_dir / "radbridge.yaml").write_text(
        f"""\
data_dir: {cfg_dir / "data"}
metrics: {{host: {HOST}, port: {metrics}}}
logging: {{level: WARNING}}
channels:
  - name: images
    source: {{type: dicom_scp, ae_title: RADBRIDGE, host: {HOST}, port: {port}}}
"""
    )
    cmd = radbridge_command()
    log = open(cfg_dir / "stderr.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([*cmd, "run", str(cfg_dir / "radbridge.yaml")], stderr=log, stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    return Server("radbridge", "radbridge (archive+index)", "RADBRIDGE", port, proc, cfg_dir / "data" / "archive")


def start_storescp(tmp: Path) -> Server:
    """dcmtk storescp writing every instance to a folder."""
    port, out = free_port(), tmp / "storescp"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-od", str(out), "-aet", "STORESCP", str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(port, proc)
    return Server("dcmtk", "dcmtk storescp", "STORESCP", port, proc, out)


def start_orthanc(tmp: Path) -> Server:
    """Orthanc with a temp config (files and SQLite index in tmp)."""
    port, http = free_port(), free_port()
    folder = tmp / "orthanc"
    (folder / "db").mkdir(parents=True)
    config = {
        "Name": "bench", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [], "StorageCompression": False,
    }  # fmt: skip
    (folder / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with suppress(OSError):
            urllib.request.urlopen(f"http://{HOST}:{http}/system", timeout=1).read()
            break
        time.sleep(0.1)
    wait_port(port, proc)
    return Server("orthanc", "Orthanc", "ORTHANC", port, proc, folder / "db")


def start_pynetdicom(tmp: Path) -> Server:
    """pynetdicom's storescp app writing every instance to a folder."""
    port, out = free_port(), tmp / "pynetdicom"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pynetdicom", "storescp", "-q", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_port(port, proc)
    return Server("pynetdicom", "pynetdicom storescp", "STORESCP", port, proc, out)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Start every server, then measure them round-robin; every process started here is stopped."""
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="rb-dicom-bench-") as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "data"
        data.mkdir()
        total = args.instances * (args.rounds * 2) + args.warmup
        files = make_instances(data, total)
        size_mb = sum(p.stat().st_size for p in files[: args.instances]) / 1e6
        try:
            for start in (start_radbridge, start_storescp, start_orthanc, start_pynetdicom):
                servers.append(start(tmp))
            warm = files[: args.warmup]
            offset = args.warmup
            for server in servers:
                if warm:
                    server.send(warm, 1)
            for rnd in range(args.rounds):
                for conns in (1, args.associations):
                    batch = files[offset : offset + args.instances]
                    offset += args.instances
                    for server in servers:
                        # the same instances for every server in this run: each stores them once
                        cpu0 = cpu_seconds(server.proc.pid)
                        wall = server.send(batch, conns)
                        cpu = cpu_seconds(server.proc.pid) - cpu0
                        res = {"wall_s": wall, "inst_per_s": len(batch) / wall, "mb_per_s": size_mb / wall,
                               "cpu_ms_per_inst": cpu / len(batch) * 1000}  # fmt: skip
                        server.runs.setdefault(conns, []).append(res)
                        print(
                            f"  round {rnd + 1} {server.label:<26} {conns} assoc: {res['inst_per_s']:7.1f} inst/s"
                            f"  {res['mb_per_s']:6.1f} MB/s  cpu {res['cpu_ms_per_inst']:.2f} ms/inst",
                            file=sys.stderr, flush=True,
                        )  # fmt: skip
        finally:
            for server in servers:
                stop(server.proc)
    out = {}
    for server in servers:
        out[server.key] = {"label": server.label}
        for conns, runs in server.runs.items():
            out[server.key][f"c{conns}"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return out


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The flat figures the JSON line carries."""
    rb, dcmtk, orthanc = results["radbridge"], results["dcmtk"], results["orthanc"]
    c = f"c{args.associations}"
    summary: dict[str, Any] = {
        "instances": args.instances,
        "inst_per_s": round(rb["c1"]["inst_per_s"], 1),
        "mb_per_s": round(rb["c1"]["mb_per_s"], 2),
        "inst_per_s_4assoc": round(rb[c]["inst_per_s"], 1),
        "ratio_vs_orthanc": round(rb["c1"]["inst_per_s"] / orthanc["c1"]["inst_per_s"], 3),
        "ratio_vs_dcmtk": round(rb["c1"]["inst_per_s"] / dcmtk["c1"]["inst_per_s"], 3),
        "ratio_vs_orthanc_4assoc": round(rb[c]["inst_per_s"] / orthanc[c]["inst_per_s"], 3),
        "ratio_vs_dcmtk_4assoc": round(rb[c]["inst_per_s"] / dcmtk[c]["inst_per_s"], 3),
    }
    for key, res in results.items():
        summary[f"{key}_inst_per_s"] = round(res["c1"]["inst_per_s"], 1)
        summary[f"{key}_inst_per_s_4assoc"] = round(res[c]["inst_per_s"], 1)
        summary[f"{key}_cpu_ms_per_inst"] = round(res["c1"]["cpu_ms_per_inst"], 3)
    summary["targets"] = {
        "ratio_vs_orthanc": [TARGET_VS_ORTHANC, summary["ratio_vs_orthanc"] >= TARGET_VS_ORTHANC],
        "ratio_vs_dcmtk": [TARGET_VS_DCMTK, summary["ratio_vs_dcmtk"] >= TARGET_VS_DCMTK],
    }
    summary["nproc"] = os.cpu_count()
    summary["python"] = platform.python_version()
    return summary


def print_table(results: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    """The human-readable report."""
    c = f"c{args.associations}"
    print(f"\nDICOM C-STORE: {args.instances} x CT_small (39 KB) with dcmtk storescu; {summary['nproc']} CPUs\n")
    head = f"{'server':<28} {'inst/s 1 assoc':>15} {'MB/s':>7} {f'inst/s {args.associations} assoc':>15} {'CPU ms/inst':>12}"
    print(head)
    print("-" * len(head))
    for res in results.values():
        one, many = res["c1"], res[c]
        print(f"{res['label']:<28} {one['inst_per_s']:>15.1f} {one['mb_per_s']:>7.2f} {many['inst_per_s']:>15.1f}"
              f" {one['cpu_ms_per_inst']:>12.2f}")  # fmt: skip
    print("\nradbridge, 1 association:")
    for name, key, target in (("vs Orthanc", "ratio_vs_orthanc", TARGET_VS_ORTHANC),
                              ("vs dcmtk storescp", "ratio_vs_dcmtk", TARGET_VS_DCMTK)):  # fmt: skip
        verdict = "PASS" if summary["targets"][key][1] else "MISS"
        print(f"  ratio {name:<20} {summary[key]:6.2f}   target >= {target}x  {verdict}")
    print(f"  with {args.associations} associations: {summary['ratio_vs_orthanc_4assoc']:.2f}x Orthanc,"
          f" {summary['ratio_vs_dcmtk_4assoc']:.2f}x dcmtk")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse options and run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--instances", type=int, default=500, help="instances per run (default 500)")
    p.add_argument("--associations", type=int, default=4, help="concurrent associations of the second run")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all servers; medians reported (default 3)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured instances first")
    p.add_argument("--quick", action="store_true", help="100 instances, 1 round")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = p.parse_args(argv)
    for tool in ("storescu", "storescp", "Orthanc"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian packages dcmtk and orthanc)", file=sys.stderr)
            return 2
    if args.quick:
        args.instances, args.rounds = 100, 1
    args.instances -= args.instances % args.associations
    results = run_all(args)
    summary = summarise(results, args)
    print_table(results, summary, args)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
