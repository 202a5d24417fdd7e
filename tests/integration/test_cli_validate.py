"""``radbridge validate`` and ``run`` report every config mistake with its place, and never half-start."""

from __future__ import annotations

import re
from pathlib import Path

import hl7.client
import pytest

from tests.integration.helpers import (
    free_port,
    make_orm,
    port_is_free,
    run_cli,
    segments,
)

pytestmark = pytest.mark.integration

# Each mistake on a line of its own; the expected reports are listed next to the config.
BAD = """\
data_dir: data
metrics: {{port: {metrics_port}}}
channels:
  - name: his
    source:
      type: mllp_listener
      port: not-a-port
      colour: blue
    filter: 'MSH-9.1 == "ORM" and ('
    transformer:
      template: |
        MSH|{{{{ msg["MSH-2"] }}}}
        PID|{{{{ msg["PID-3"] }}}}
        OBR|{{% if %}}
    destinations:
      - name: out
        type: carrier_pigeon
        host: 127.0.0.1
  - name: his
    source:
      type: mllp_listener
      port: {good_port}
    destinations:
      - name: ris
        type: mllp_sender
        host: 127.0.0.1
        port: ${{MISSING_ENV}}
"""
EXPECTED = [
    (7, 13, "channels[0].source.port", "valid integer"),
    (8, 7, "channels[0].source.colour", "unknown key 'colour'"),
    (9, 36, "channels[0].filter", "end of expression"),
    (14, 1, "channels[0].transformer.template", "template line 3"),
    (17, 15, "channels[0].destinations[0].type", "unknown destination type 'carrier_pigeon'"),
    (19, 11, "channels[1].name", "channel name 'his' is used twice"),
    (27, 15, "channels[1].destinations[0].port", "environment variable MISSING_ENV is not set"),
]
LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<path>[\w.\[\]-]+): (?P<message>.+)$")


def _check_report(output: str, config: Path) -> None:
    lines = output.strip().splitlines()
    assert lines[-1] == f"{len(EXPECTED)} errors", output
    found = []
    for line in lines[:-1]:
        m = LINE.match(line)
        assert m, f"not file:line:col: path: message: {line!r}"
        assert m["file"] == str(config)
        found.append((int(m["line"]), int(m["col"]), m["path"], m["message"]))
    assert len(found) == len(EXPECTED), output
    for (line, col, path, message), want in zip(found, EXPECTED):
        assert (line, col, path) == want[:3], output
        assert want[3] in message, output


def test_validate_lists_every_mistake_with_its_place(tmp_path: Path) -> None:
    """Seven different mistakes give seven file:line:col reports, in file order, then a count and exit 1."""
    config = tmp_path / "bad.yaml"
    config.write_text(BAD.format(metrics_port=free_port(), good_port=free_port()))
    proc = run_cli("validate", str(config), unset=["MISSING_ENV"])
    assert proc.returncode == 1
    assert proc.stdout == ""
    _check_report(proc.stderr, config)


def test_run_reports_the_same_and_binds_nothing(tmp_path: Path) -> None:
    """``run`` on a bad config prints exactly what ``validate`` prints, exits 1 and never binds a port."""
    metrics_port, good_port = free_port(), free_port()
    config = tmp_path / "bad.yaml"
    config.write_text(BAD.format(metrics_port=metrics_port, good_port=good_port))
    validate = run_cli("validate", str(config), unset=["MISSING_ENV"])
    run = run_cli("run", str(config), timeout=20, unset=["MISSING_ENV"])
    assert run.returncode == 1
    assert run.stderr == validate.stderr
    _check_report(run.stderr, config)
    assert "listening" not in run.stderr and "ready" not in run.stderr
    assert not (tmp_path / "data").exists(), "nothing was started: not even the data folder"
    assert port_is_free(good_port) and port_is_free(metrics_port)


def test_include_and_env_port(tmp_path: Path, engine_factory) -> None:
    """A config split with ``include:`` validates, and ``${RB_PORT}`` sets the port the engine listens on."""
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "orders.yaml").write_text(
        "channels:\n"
        "  - name: orders\n"
        "    source:\n"
        "      type: mllp_listener\n"
        "      port: ${RB_PORT}\n"
        "    filter: 'MSH-9.1 == \"ORM\"'\n"
    )
    main = tmp_path / "radbridge.yaml"
    main.write_text("include: channels/*.yaml\ndata_dir: data\nmetrics: {enabled: false}\n")
    port = free_port()
    env = {"RB_PORT": str(port)}
    proc = run_cli("validate", str(main), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{main}: OK (1 channels)"

    missing = run_cli("validate", str(main), unset=["RB_PORT"])
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"{tmp_path / 'channels' / 'orders.yaml'}:5:13: channels[0].source.port: environment variable RB_PORT is not set",
        "1 error",
    ]

    engine = engine_factory(main, env=env).start_ready()
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        ack = segments(client.send_message(make_orm("ENV-1", "P1", "A1")).decode())
    assert ack["MSA"][1:3] == ["AA", "ENV-1"]
    assert engine.terminate() == 0
