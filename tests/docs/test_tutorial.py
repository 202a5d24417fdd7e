"""docs/tutorial.md runs as written: every file it shows is written, every command run, every output checked.

Conventions of the tutorial's fenced blocks: ``yaml file=NAME`` / ``text file=NAME`` write NAME;
``console`` blocks hold ``$ command`` lines, each followed by lines that must appear in its
output (whitespace-insensitive) and optionally ``[exit N]`` (default 0). ``cd DIR`` changes the
folder; ``command &`` starts in the background and waits for ``radbridge ready``; ``kill %1``
stops it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.M | re.S)


def blocks() -> list[tuple[str, str, str]]:
    """(kind, info, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in BLOCK.finditer(TUTORIAL.read_text())]


def commands(body: str) -> list[tuple[str, list[str], int]]:
    """(command, expected output lines, expected exit code) of a console block."""
    out: list[tuple[str, list[str], int]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], [], 0))
        elif out and (m := re.fullmatch(r"\[exit (\d+)\]", line.strip())):
            out[-1] = (out[-1][0], out[-1][1], int(m.group(1)))
        elif out and line.strip():
            out[-1][1].append(line)
    return out


def squash(text: str) -> str:
    """Whitespace runs as one space."""
    return " ".join(text.split())


def environment(tmp: Path) -> dict[str, str]:
    """PATH: dcmtk's findscu first (pynetdicom installs its own findscu), then this Python's scripts."""
    bindir = tmp / "bin"
    bindir.mkdir()
    findscu = shutil.which("findscu", path="/usr/bin:/usr/local/bin")
    assert findscu, "dcmtk's findscu is needed (Debian package dcmtk)"
    (bindir / "findscu").symlink_to(findscu)
    scripts = Path(sys.executable).parent
    return {**os.environ, "PATH": os.pathsep.join([str(bindir), str(scripts), os.environ.get("PATH", "")])}


def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    """Files and commands of docs/tutorial.md, in order; each command's output and exit code as shown."""
    env = environment(tmp_path)
    cwd = tmp_path / "work"
    cwd.mkdir()
    background: subprocess.Popen | None = None
    ran = 0
    try:
        for kind, info, body in blocks():
            if (m := re.fullmatch(r"file=(\S+)", info)) is not None:
                (cwd / m.group(1)).write_text(body)
                continue
            if kind != "console":
                continue
            for command, expected, code in commands(body):
                ran += 1
                if command.startswith("cd "):
                    cwd = cwd / command[3:].strip()
                    continue
                if command == "kill %1":
                    assert background is not None and background.poll() is None, "nothing runs in the background"
                    background.send_signal(signal.SIGTERM)
                    assert background.wait(timeout=30) == 0, "the engine did not stop cleanly on SIGTERM"
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(background.pid, signal.SIGKILL)
                    background = None
                    continue
                if command.endswith(" &"):
                    log = (tmp_path / "background.log").open("wb")
                    background = subprocess.Popen("exec " + command[:-2], shell=True, cwd=cwd, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
                    deadline = time.monotonic() + 60
                    text = ""
                    while not all(squash(e) in squash(text) for e in expected):
                        assert background.poll() is None, text
                        assert time.monotonic() < deadline, f"{command}: no {expected} in {text!r}"
                        time.sleep(0.1)
                        text = (tmp_path / "background.log").read_text(errors="replace")
                    continue
                proc = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                                      timeout=120)  # fmt: skip
                output = proc.stdout + proc.stderr
                assert proc.returncode == code, f"{command}: exit {proc.returncode}\n{output}"
                for line in expected:
                    assert squash(line) in squash(output), f"{command}: expected {line!r} in\n{output}"
    finally:
        if background is not None:  # the whole session: nothing the command started outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(background.pid, signal.SIGKILL)
            background.wait()
    assert ran >= 10 and background is None


def test_the_tutorial_checks_fail_on_a_wrong_output() -> None:
    """The block reader sees the expected output and exit codes (a tutorial edit cannot silently pass)."""
    parsed = [c for kind, _, body in blocks() if kind == "console" for c in commands(body)]
    failing = [c for c in parsed if c[2] == 1]
    assert len(failing) == 1 and "1 passed, 1 failed" in failing[0][1]
    assert ("radbridge validate radbridge.yaml", ["radbridge.yaml: OK (2 channels)"], 0) in parsed
