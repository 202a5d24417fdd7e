"""Orthanc as a PACS for integration tests: free loopback ports, a temp config and storage, stop/start.

``Orthanc(workdir).start()`` runs ``/usr/sbin/Orthanc`` with a JSON config written under *workdir*
(storage and index there too, no plugins, no remote access, ``DicomCheckCalledAet: false``) and
``TCP_NODELAY=1`` in its environment (DCMTK, which Orthanc uses for DICOM, then disables Nagle),
and waits until ``GET /system`` answers and the DICOM port accepts connections. ``stop()`` and
``start()`` again reuse the same ports and storage, to simulate an outage; ``freeze()`` stops the
process where it stands (SIGSTOP) to catch a transfer mid-flight. The :func:`orthanc` fixture (and
:func:`running_orthanc`) always stop it. The REST API is read with ``urllib`` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import free_port

ORTHANC_BIN = os.environ.get("RADBRIDGE_TEST_ORTHANC", "/usr/sbin/Orthanc")


class Orthanc:
    """One Orthanc server on 127.0.0.1; ``dicom_port``/``http_port`` stay the same across restarts."""

    def __init__(self, workdir: Path, *, aet: str = "ORTHANC", dicom_port: int = 0, http_port: int = 0) -> None:
        self.workdir = workdir
        self.aet = aet
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log_path = workdir / "orthanc-0.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "orthanc.json"
        config = {
            "Name": "radbridge-test",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomCheckCalledAet": False,
            "DicomServerEnabled": True,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "StorageCompression": False,
            "ConcurrentJobs": 1,
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        """The REST API base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> Orthanc:
        """Start Orthanc (a new log file per run) and wait until HTTP and DICOM answer."""
        if shutil.which(ORTHANC_BIN) is None:
            pytest.skip(f"Orthanc not installed at {ORTHANC_BIN}")
        assert not self.running, "Orthanc already running"
        self.runs += 1
        self.log_path = self.workdir / f"orthanc-{self.runs}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [ORTHANC_BIN, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TCP_NODELAY": "1"},
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while not (self._http_ready() and self._dicom_ready()):
            if self.proc.poll() is not None:
                raise AssertionError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() >= deadline:
                self.stop(kill=True)
                raise AssertionError(f"Orthanc not ready after {timeout:g}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def _http_ready(self) -> bool:
        try:
            return "Version" in self.get("/system", timeout=1.0)
        except (OSError, ValueError):
            return False

    def _dicom_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> None:
        """Stop Orthanc: SIGTERM (SIGKILL after *timeout*), or SIGKILL at once with *kill*; a no-op if stopped."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing until thawed or stopped."""
        assert self.running, "Orthanc is not running"
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.running:
            self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        """What the current run has logged."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- REST ------------------------------------------------------------------
    def get(self, path: str, timeout: float = 10.0) -> Any:
        """``GET`` *path* from the REST API, decoded from JSON."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as rsp:
            return json.loads(rsp.read())

    def delete(self, path: str, timeout: float = 10.0) -> None:
        """``DELETE`` *path* (e.g. ``/instances/<id>``)."""
        req = urllib.request.Request(self.url + path, method="DELETE")
        with urllib.request.urlopen(req, timeout=timeout):
            pass

    def instances(self) -> list[str]:
        """SOP Instance UIDs of every stored instance, one entry per Orthanc instance."""
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in self.get("/instances?expand")]

    def count(self) -> int:
        """How many instances Orthanc holds."""
        return int(self.get("/statistics")["CountInstances"])


@contextlib.contextmanager
def running_orthanc(workdir: Path, **kwargs: Any) -> Iterator[Orthanc]:
    """A started :class:`Orthanc`, stopped on exit whatever happened."""
    server = Orthanc(workdir, **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A running Orthanc on free loopback ports with storage under ``tmp_path``; stopped at teardown."""
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server
