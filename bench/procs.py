"""Process and port helpers shared by the benchmark scripts (each runs as ``python bench/NAME.py``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Wait until something accepts TCP connections on *port* (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout:g}s")


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit within *timeout* seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of *pid*."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def radbridge_command() -> list[str]:
    """The ``radbridge`` entry point next to this interpreter, else on PATH, else ``python -c``."""
    exe = Path(sys.executable).with_name("radbridge")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("radbridge")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]
