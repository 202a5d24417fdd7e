"""HL7 hot-path throughput: radbridge against two bare Twisted baselines measured in the same run.

Load: N ORM^O01 messages (~600 bytes, MSH PID PV1 ORC OBR NTE), first over one connection
where the sender waits for each ACK, then over 4 concurrent connections (N/4 each). Every
connection is its own process with a blocking, TCP_NODELAY socket.

Servers, each a separate process on 127.0.0.1:

* radbridge (``radbridge run``, temp config + data dir, SQLite): one channel with a filter
  (``MSH-9.1 == "ORM"``), a Jinja transform rewriting MSH-3, the store (ACK after COMMIT)
  and an ``mllp_sender`` destination to a downstream ACK server (another process).
  Once with the default ``sqlite_synchronous: NORMAL``, once with ``FULL``.
* (a) parse+ack: a bare Twisted server running ``hl7.parse`` and ``msg.create_ack()``.
* (b) static ack: a bare Twisted server that splits out MSH-10 and writes a prebuilt ACK.

Every server gets a warm-up, then 3 rounds (round-robin over the servers, so machine noise
hits them alike); the table shows medians. See docs/performance.md.

Usage::

    python bench/hl7_throughput.py            # 5,000 messages, 3 rounds
    python bench/hl7_throughput.py --quick    # 1,000 messages, 1 round (smoke test)
    python bench/hl7_throughput.py --json     # last line: one JSON object

Internal: ``--serve static|parse|downstream --port P`` runs one of the bare servers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from contextlib import suppress
from pathlib import Path
from typing import Any

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
END = EB + CR
from procs import HOST, free_port, radbridge_command, stop  # noqa: E402 - bench/ is on sys.path when a script runs

TARGET_VS_PARSE = 2.5
TARGET_VS_STATIC = 0.2
TARGET_P99_MS = 2.0
TEMPLATE = """\
{% set msh = msg.segments[0].split("|") %}
{{ msh[:2] | join("|") }}|RADBRIDGE|{{ msh[3:] | join("|") }}
{% for s in msg.segments[1:] %}
{{ s }}
{% endfor %}
"""


# ---------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------
def make_message(control_id: str, n: int) -> bytes:
    """One ORM^O01 of about 600 bytes with a unique MSH-10, accession and order numbers."""
    segments = [
        f"MSH|^~\\&|HIS|GENERAL_HOSP|RIS|RADIOLOGY|20240315101500||ORM^O01|{control_id}|P|2.3.1",
        f"PID|1||MRN{n:08d}^^^GENERAL_HOSP^MR||DOE^JANE^QUINN^^MS||19700412|F|||"
        f"123 MAIN ST^^SPRINGFIELD^IL^62701^USA||(555)555-0100|||S||ACCT{n:08d}",
        f"PV1|1|O|RAD^XR1^01^GENERAL_HOSP||||1234^SMITH^JOHN^A^^DR|||RAD||||1||||OP|V{n:08d}",
        f"ORC|NW|PL{n:08d}^HIS|FL{n:08d}^RIS||SC||^^^20240315103000^^R||20240315101500|||1234^SMITH^JOHN^A^^DR",
        f"OBR|1|PL{n:08d}^HIS|FL{n:08d}^RIS|71046^XR CHEST 2 VIEWS^CPT4|||20240315101500|||||||||"
        f"1234^SMITH^JOHN^A^^DR||ACC{n:08d}|||||CR|||^^^20240315103000^^R",
        "NTE|1|L|Cough for two weeks, afebrile. Rule out pneumonia.",
    ]
    return "\r".join(segments).encode("ascii")


# ---------------------------------------------------------------------------
# bare servers (run in their own interpreter: --serve ...)
# ---------------------------------------------------------------------------
def serve(kind: str, port: int) -> None:
    """Run one bare Twisted server until SIGTERM; print ``ready PORT`` once listening."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    static_head = b"\x0bMSH|^~\\&|RIS|RADIOLOGY|HIS|GENERAL_HOSP|20240315101500||ACK^O01^ACK|1|P|2.3.1\rMSA|AA|"
    static_tail = b"\x1c\r"
    stats = {"count": 0, "first": 0.0, "last": 0.0}

    class Framed(Protocol):
        """Splits the stream on EB CR; subclasses answer each payload."""

        buf = b""

        def connectionMade(self) -> None:  # noqa: N802 - Twisted naming
            self.transport.setTcpNoDelay(True)

        def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted naming
            buf = self.buf + data
            end = buf.find(END)
            while end >= 0:
                start = buf.find(SB, 0, end)
                self.frame(buf[start + 1 : end])
                buf = buf[end + 2 :]
                end = buf.find(END)
            self.buf = buf

        def frame(self, payload: bytes) -> None:
            raise NotImplementedError

    class StaticAck(Framed):
        """(b): MSH-10 only, prebuilt ACK."""

        def frame(self, payload: bytes) -> None:
            msh = payload[: payload.find(CR)]
            control_id = msh.split(b"|", 10)[9]
            self.transport.write(static_head + control_id + static_tail)

    class ParseAck(Framed):
        """(a): python-hl7 full parse and create_ack()."""

        def frame(self, payload: bytes) -> None:
            msg = hl7.parse(payload.decode("utf-8"))
            self.transport.write(SB + str(msg.create_ack()).encode("utf-8") + END)

    class Downstream(StaticAck):
        """Static ACK that also counts deliveries; the payload ``STATS`` returns the counters."""

        def frame(self, payload: bytes) -> None:
            if payload == b"STATS":
                text = f"{stats['count']} {stats['first']!r} {stats['last']!r}"
                self.transport.write(SB + text.encode() + END)
                return
            now = time.monotonic()
            if not stats["count"]:
                stats["first"] = now
            stats["count"] += 1
            stats["last"] = now
            super().frame(payload)

    if kind == "parse":
        import hl7
    protocol = {"static": StaticAck, "parse": ParseAck, "downstream": Downstream}[kind]
    factory = Factory.forProtocol(protocol)
    factory.noisy = False
    listening = reactor.listenTCP(port, factory, interface=HOST)
    print(f"ready {listening.getHost().port}", flush=True)
    reactor.run()


# ---------------------------------------------------------------------------
# load client (one process per connection)
# ---------------------------------------------------------------------------
def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _roundtrip(sock: socket.socket, frame: bytes) -> bytes:
    sock.sendall(frame)
    data = sock.recv(65536)
    while not data.endswith(END):
        more = sock.recv(65536)
        if not more:
            raise ConnectionError("server closed the connection before the ACK")
        data += more
    return data


def _ack_ok(ack: bytes, control_id: bytes) -> bool:
    """MSA-1 is AA and MSA-2 is the sent MSH-10."""
    i = ack.find(b"\rMSA|")
    if i < 0:
        return False
    msa = ack[i + 1 :].split(CR, 1)[0].rstrip(EB).split(b"|")
    return len(msa) > 2 and msa[1] == b"AA" and msa[2] == control_id


def send_load(port: int, tag: str, conn: int, count: int, barrier: Any = None) -> dict[str, Any]:
    """Send *count* frames one at a time, waiting for each ACK; latencies in seconds."""
    ids = [f"{tag}{conn}{i:06d}" for i in range(count)]
    frames = [SB + make_message(cid, conn * 1_000_000 + i) + END for i, cid in enumerate(ids)]
    sock = _connect(port)
    latencies = array("d", bytes(8 * count))
    acks: list[bytes] = [b""] * count
    try:
        if barrier is not None:
            barrier.wait(timeout=60)
        clock = time.perf_counter
        started = time.monotonic()
        for i, frame in enumerate(frames):
            t0 = clock()
            acks[i] = _roundtrip(sock, frame)
            latencies[i] = clock() - t0
        ended = time.monotonic()
    finally:
        sock.close()
    bad = sum(not _ack_ok(ack, cid.encode()) for ack, cid in zip(acks, ids))
    size = sum(len(f) - 3 for f in frames) / count
    return {"start": started, "end": ended, "lat": latencies.tobytes(), "bad": bad, "size": size}


def _client_main(port: int, tag: str, conn: int, count: int, barrier: Any, out: Any) -> None:
    try:
        out.put((conn, send_load(port, tag, conn, count, barrier)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put((conn, {"error": f"{type(exc).__name__}: {exc}"}))


def run_load(port: int, tag: str, conns: int, total: int) -> dict[str, Any]:
    """*total* messages over *conns* concurrent client processes; aggregate rate and latency."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(conns)
    out = ctx.Queue()
    per = total // conns
    procs = [ctx.Process(target=_client_main, args=(port, tag, c, per, barrier, out)) for c in range(conns)]
    results = []
    try:
        for p in procs:
            p.start()
        for _ in procs:
            results.append(out.get(timeout=600))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
    errors = [r["error"] for _, r in results if "error" in r]
    if errors:
        raise RuntimeError(f"load client failed: {errors[0]}")
    lat = sorted(x for _, r in results for x in array("d", r["lat"]))
    start = min(r["start"] for _, r in results)
    end = max(r["end"] for _, r in results)
    n = len(lat)
    return {
        "messages": n,
        "wall_s": end - start,
        "start": start,
        "end": end,
        "msgs_per_s": n / (end - start),
        "p50_ms": lat[int(0.50 * (n - 1))] * 1000,
        "p99_ms": lat[int(0.99 * (n - 1))] * 1000,
        "max_ms": lat[-1] * 1000,
        "bad_acks": sum(r["bad"] for _, r in results),
        "message_bytes": results[0][1]["size"],
    }


# ---------------------------------------------------------------------------
# server processes
# ---------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM in MB and CPU seconds (user + system) of *pid*."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def start_bare(kind: str, procs: list[subprocess.Popen]) -> tuple[subprocess.Popen, int]:
    """Start a bare server in a fresh interpreter; wait for its ``ready`` line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", kind, "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    procs.append(proc)
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        raise RuntimeError(f"{kind} server did not start (exit {proc.poll()})")
    return proc, int(line.split()[1])


def start_radbridge(
    workdir: Path, synchronous: str, downstream_port: int, procs: list[subprocess.Popen]
) -> tuple[subprocess.Popen, int, Path]:
    """Write a temp config, run ``radbridge run`` and wait for ``radbridge ready`` on stderr."""
    port, metrics_port = free_port(), free_port()
    cfg_dir = workdir / f"radbridge-{synchronous.lower()}"
    cfg_dir.mkdir()
    template = "\n".join("        " + line for line in TEMPLATE.splitlines())
    config = f"""\
data_dir: {cfg_dir / "data"}
store: {{sqlite_synchronous: {synchronous}}}
metrics: {{host: {HOST}, port: {metrics_port}}}
logging: {{level: INFO}}
channels:
  - name: bench
    source: {{type: mllp_listener, host: {HOST}, port: {port}}}
    filter: 'MSH-9.1 == "ORM"'
    transformer:
      template: |
{template}
    destinations:
      - name: downstream
        type: mllp_sender
        host: {HOST}
        port: {downstream_port}
"""
    cfg = cfg_dir / "radbridge.yaml"
    cfg.write_text(config)
    log_path = cfg_dir / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*radbridge_command(), "run", str(cfg)], stderr=log, stdout=subprocess.DEVNULL)
    procs.append(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "radbridge ready" in log_path.read_text(errors="replace"):
            return proc, port, log_path
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"radbridge did not become ready:\n{log_path.read_text(errors='replace')[-2000:]}")


def downstream_stats(port: int) -> tuple[int, float, float]:
    """(messages received, monotonic time of the first, of the last) from the downstream server."""
    with _connect(port) as sock:
        count, first, last = _roundtrip(sock, SB + b"STATS" + END)[1:-2].split()
    return int(count), float(first), float(last)


def wait_delivered(port: int, expected: int, timeout: float = 120.0) -> float:
    """Wait until the downstream has *expected* messages in total; return when the last arrived."""
    deadline = time.monotonic() + timeout
    while True:
        count, _, last = downstream_stats(port)
        if count >= expected:
            return last
        if time.monotonic() > deadline:
            raise RuntimeError(f"downstream received {count} of {expected} messages within {timeout:g}s")
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# one server's measurement
# ---------------------------------------------------------------------------
class Server:
    """One server under test: its process, MLLP port and (radbridge) downstream port."""

    def __init__(self, key: str, label: str, tag: str, proc: subprocess.Popen, port: int, downstream: int | None):
        self.key, self.label, self.tag = key, label, tag
        self.proc, self.port, self.downstream = proc, port, downstream
        self.runs: dict[int, list[dict[str, Any]]] = {}

    def warm_up(self, count: int) -> None:
        """Unmeasured messages first (imports, caches, the downstream connection)."""
        if count:
            expected = downstream_stats(self.downstream)[0] + count if self.downstream else 0
            send_load(self.port, self.tag + "W", 0, count)
            if self.downstream:
                wait_delivered(self.downstream, expected)

    def run(self, rnd: int, conns: int, messages: int) -> dict[str, Any]:
        """One measured run; radbridge runs end when the downstream has every message."""
        expected = downstream_stats(self.downstream)[0] + messages if self.downstream else 0
        before = proc_status(self.proc.pid)
        res = run_load(self.port, f"{self.tag}{rnd}{conns}", conns, messages)
        if self.downstream:
            last = wait_delivered(self.downstream, expected)
            res["delivered_per_s"] = res["messages"] / (last - res["start"])
        after = proc_status(self.proc.pid)
        res["cpu_us_per_msg"] = (after["cpu_s"] - before["cpu_s"]) / res["messages"] * 1e6
        res["rss_mb"], res["hwm_mb"] = after["VmRSS"], after["VmHWM"]
        if res["bad_acks"]:
            raise RuntimeError(f"{self.label}: {res['bad_acks']} ACKs were not AA for the sent MSH-10")
        self.runs.setdefault(conns, []).append(res)
        print(
            f"  round {rnd + 1} {self.label:<18} {conns} conn: {res['msgs_per_s']:7,.0f} msgs/s"
            f"  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  cpu {res['cpu_us_per_msg']:.0f} µs/msg",
            file=sys.stderr,
            flush=True,
        )
        return res

    def result(self) -> dict[str, Any]:
        """Median of each figure over the rounds (RSS: the highest)."""
        out: dict[str, Any] = {"label": self.label}
        for conns, runs in self.runs.items():
            agg = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float | int)}
            agg["hwm_mb"] = max(r["hwm_mb"] for r in runs)
            agg["rounds"] = [round(r["msgs_per_s"], 1) for r in runs]
            out[f"c{conns}"] = agg
        return out


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Start every server, then measure them round-robin; every process started here is stopped."""
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as tmp:
        try:
            _, ds_port = start_bare("downstream", procs)
            servers = []
            for sync, key, tag in (("NORMAL", "radbridge_normal", "N"), ("FULL", "radbridge_full", "F")):
                proc, port, _ = start_radbridge(Path(tmp), sync, ds_port, procs)
                servers.append(Server(key, f"radbridge {sync}", tag, proc, port, ds_port))
            for kind, key, tag, label in (("parse", "parse_ack", "A", "(a) parse+ack"), ("static", "static_ack", "B", "(b) static ack")):  # fmt: skip
                proc, port = start_bare(kind, procs)
                servers.append(Server(key, label, tag, proc, port, None))
            for server in servers:
                server.warm_up(args.warmup)
            for rnd in range(args.rounds):
                for server in servers:
                    for conns in (1, args.connections):
                        server.run(rnd, conns, args.messages)
        finally:
            for proc in procs:
                stop(proc)
    return {server.key: server.result() for server in servers}


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The flat figures (radbridge NORMAL, one connection, unless named otherwise)."""
    rb, a, b = results["radbridge_normal"], results["parse_ack"], results["static_ack"]
    c = f"c{args.connections}"
    summary: dict[str, Any] = {
        "messages": args.messages,
        "connections": args.connections,
        "message_bytes": round(rb["c1"]["message_bytes"]),
        "msgs_per_s": round(rb["c1"]["msgs_per_s"], 1),
        "p50_ms": round(rb["c1"]["p50_ms"], 3),
        "p99_ms": round(rb["c1"]["p99_ms"], 3),
        "msgs_per_s_4conn": round(rb[c]["msgs_per_s"], 1),
        "p99_ms_4conn": round(rb[c]["p99_ms"], 3),
        "delivered_per_s": round(rb["c1"]["delivered_per_s"], 1),
        "delivered_per_s_4conn": round(rb[c]["delivered_per_s"], 1),
        "ratio_vs_parse_ack": round(rb["c1"]["msgs_per_s"] / a["c1"]["msgs_per_s"], 3),
        "ratio_vs_static_ack": round(rb["c1"]["msgs_per_s"] / b["c1"]["msgs_per_s"], 3),
    }
    for key, res in results.items():
        if key == "radbridge_normal":
            prefix = ""
        else:
            prefix = key + "_"
            summary[f"{prefix}msgs_per_s"] = round(res["c1"]["msgs_per_s"], 1)
            summary[f"{prefix}p50_ms"] = round(res["c1"]["p50_ms"], 3)
            summary[f"{prefix}p99_ms"] = round(res["c1"]["p99_ms"], 3)
            summary[f"{prefix}msgs_per_s_4conn"] = round(res[c]["msgs_per_s"], 1)
        summary[f"{prefix}cpu_us_per_msg"] = round(res["c1"]["cpu_us_per_msg"], 1)
        summary[f"{prefix}cpu_us_per_msg_4conn"] = round(res[c]["cpu_us_per_msg"], 1)
        summary[f"{prefix}rss_mb"] = round(res[c]["rss_mb"], 1)
        summary[f"{prefix}hwm_mb"] = round(res[c]["hwm_mb"], 1)
    full = results["radbridge_full"]
    summary["radbridge_full_delivered_per_s"] = round(full["c1"]["delivered_per_s"], 1)
    summary["radbridge_full_delivered_per_s_4conn"] = round(full[c]["delivered_per_s"], 1)
    summary["targets"] = {
        "ratio_vs_parse_ack": [TARGET_VS_PARSE, summary["ratio_vs_parse_ack"] >= TARGET_VS_PARSE],
        "ratio_vs_static_ack": [TARGET_VS_STATIC, summary["ratio_vs_static_ack"] >= TARGET_VS_STATIC],
        "p99_ms": [TARGET_P99_MS, summary["p99_ms"] <= TARGET_P99_MS],
    }
    summary["nproc"] = os.cpu_count()
    summary["python"] = platform.python_version()
    return summary


def print_table(results: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace) -> None:
    """The human-readable report."""
    c = f"c{args.connections}"
    n = args.messages
    print(
        f"\nHL7 throughput: {n:,} ORM^O01 (~{summary['message_bytes']} bytes, 6 segments), sender waits for each ACK;"
        f" {summary['nproc']} CPUs, Python {summary['python']}\n"
    )
    head = (
        f"{'server':<22} {'msgs/s 1 conn':>14} {'p50 ms':>8} {'p99 ms':>8} "
        f"{f'msgs/s {args.connections} conns':>15} {'RSS MB':>7} {'CPU µs/msg':>11}"
    )
    print(head)
    print("-" * len(head))
    for key in ("radbridge_normal", "radbridge_full", "parse_ack", "static_ack"):
        res = results[key]
        one, many = res["c1"], res[c]
        print(
            f"{res['label']:<22} {one['msgs_per_s']:>14,.0f} {one['p50_ms']:>8.2f} {one['p99_ms']:>8.2f} "
            f"{many['msgs_per_s']:>15,.0f} {many['hwm_mb']:>7.1f} {one['cpu_us_per_msg']:>11.0f}"
        )
    print(
        "\nRSS = VmHWM after the runs; CPU = server process CPU per message over the 1-connection run"
        " (radbridge: including downstream delivery)."
    )
    for key in ("radbridge_normal", "radbridge_full"):
        res = results[key]
        print(
            f"{res['label']}: delivered downstream {res['c1']['delivered_per_s']:,.0f} msgs/s (1 conn),"
            f" {res[c]['delivered_per_s']:,.0f} msgs/s ({args.connections} conns)"
        )
    print("\nradbridge NORMAL, 1 connection:")
    rows = (
        ("ratio vs (a) parse+ack", summary["ratio_vs_parse_ack"], f">= {TARGET_VS_PARSE}x", "ratio_vs_parse_ack"),
        ("ratio vs (b) static ack", summary["ratio_vs_static_ack"], f">= {TARGET_VS_STATIC}x", "ratio_vs_static_ack"),
        ("p99 ACK latency ms", summary["p99_ms"], f"<= {TARGET_P99_MS} ms", "p99_ms"),
    )
    for name, value, target, key in rows:
        verdict = "PASS" if summary["targets"][key][1] else "MISS"
        print(f"  {name:<24} {value:>8.2f}   target {target:<10} {verdict}")


def main(argv: list[str] | None = None) -> int:
    """Parse options; serve, or run the whole benchmark."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=5000, help="messages per run (default 5000)")
    p.add_argument("--quick", action="store_true", help="1,000 messages (smoke test)")
    p.add_argument("--connections", type=int, default=4, help="concurrent connections of the second run")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured messages first (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all servers; medians are reported (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--serve", choices=("static", "parse", "downstream"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.quick:
        args.messages, args.rounds = 1000, 1
    args.messages -= args.messages % args.connections
    results = run_all(args)
    summary = summarise(results, args)
    print_table(results, summary, args)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        sys.exit(main())
