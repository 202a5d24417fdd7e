"""``radbridge replay``: stored messages through a changed channel, diffed (dry run) or reprocessed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from engine.app import App
from engine.cli import main
from engine.config.validate import validate_config
from engine.store.queries import thd_search
from tests.ris.conftest import settle

CONFIG = """\
data_dir: {data}
metrics: {{enabled: false}}
channels:
  - name: inbound
    source: {{type: memory}}
    filter: '{filter}'
    transformer:
      template: |
        {{% set msh = msg.segments[0].split("|") %}}
        {{{{ msh[:2] | join("|") }}}}|{app}|{{{{ msh[3:] | join("|") }}}}
        {{% for s in msg.segments[1:] %}}
        {{{{ s }}}}
        {{% endfor %}}
    destinations:
      - name: his
        type: memory
      - name: folder
        type: memory
        filter: 'MSH-9.1 == "ADT"'
"""


def msg(kind: str, cid: str) -> str:
    """A small HL7 message."""
    return f"MSH|^~\\&|HIS|HOSP|RB|RAD|20261201120000||{kind}|{cid}|P|2.3.1\rPID|1||1||DOE^JOHN\r"


def write(tmp_path: Path, name: str, *, app: str = "OLD", flt: str = 'MSH-9.1 in ["ADT", "ORM"]') -> Path:
    """A config for the shared data folder."""
    path = tmp_path / name
    path.write_text(CONFIG.format(data=tmp_path / "data", app=app, filter=flt))
    return path


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """Three messages (ADT, ORM, ORU filtered) stored and delivered by the old config; its path."""
    clock = Clock()
    app = App(validate_config(write(tmp_path, "old.yaml"), check_ports=False), clock)
    settle(app.start(), app.store, clock)
    source = app.services["inbound"].source
    for kind, cid in (("ADT^A04", "M1"), ("ORM^O01", "M2"), ("ORU^R01", "M3")):
        settle(source.inject(msg(kind, cid)), app.store, clock)
    for _ in range(5):
        app.store.writer.drain()
        clock.advance(0)
    settle(app.stop(), app.store, clock)
    return tmp_path / "old.yaml"


def test_dry_run_prints_a_diff_per_destination_and_a_summary(stored: Path, tmp_path: Path, capsys) -> None:
    """A changed template shows each changed output as a unified diff; nothing new is stored."""
    new = write(tmp_path, "new.yaml", app="NEW")
    assert main(["replay", "--channel", "inbound", "--config", str(new), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "message 1 (MSH-10 M1): changed" in out
    assert "-MSH|^~\\&|OLD|HOSP" in out and "+MSH|^~\\&|NEW|HOSP" in out and "folder (new)" in out
    assert "2 changed, 1 unchanged, 0 newly filtered, 0 newly erroring" in out
    vc = validate_config(new, check_ports=False)
    from engine.store.store import Store

    store = Store(vc.database_url, None, migrate=False)
    assert len(store.read_sync(thd_search, channel="inbound")) == 3
    store.engine.dispose()


def test_newly_filtered_and_newly_passing(stored: Path, tmp_path: Path, capsys) -> None:
    """A filter that now drops ORM and lets ORU through is reported per message in the JSON summary."""
    new = write(tmp_path, "new.yaml", flt='MSH-9.1 in ["ADT", "ORU"]')
    assert main(["replay", "--channel", "inbound", "-c", str(new), "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    verdicts = {m["control_id"]: m["verdict"] for m in report["messages"]}
    assert verdicts == {"M1": "unchanged", "M2": "newly_filtered", "M3": "newly_passing"}
    assert report["summary"]["newly_filtered"] == 1 and report["summary"]["newly_passing"] == 1


def test_a_template_error_is_newly_erroring(stored: Path, tmp_path: Path, capsys) -> None:
    """A template that fails while rendering (here: a division by zero for every message) is newly erroring."""
    new = write(tmp_path, "new.yaml", app="{{ 1 // ((msg['PID-5.1'] | length) - 3) }}")
    assert main(["replay", "--channel", "inbound", "-c", str(new), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "message 1 (MSH-10 M1): newly erroring: " in out and "division" in out
    assert "0 changed, 1 unchanged, 0 newly filtered, 2 newly erroring" in out


def test_without_dry_run_it_asks_then_reprocesses(stored: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Without --dry-run the user is asked; 'n' changes nothing, --yes stores the reprocessed copies."""
    new = write(tmp_path, "new.yaml", app="NEW")
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["replay", "--channel", "inbound", "-c", str(new)]) == 1
    assert "nothing reprocessed" in capsys.readouterr().out
    assert main(["replay", "--channel", "inbound", "-c", str(new), "--yes"]) == 0
    assert "3 messages reprocessed" in capsys.readouterr().out
    from engine.store.store import Store

    store = Store(validate_config(new, check_ports=False).database_url, None, migrate=False)
    rows = store.read_sync(thd_search, channel="inbound")
    store.engine.dispose()
    assert len(rows) == 6 and sum(r["parent_id"] is not None for r in rows) == 3
    # a second replay compares the originals only, not the copies
    assert main(["replay", "--channel", "inbound", "-c", str(new), "--dry-run", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["messages"]) == 3


def test_unknown_channel_is_an_error(stored: Path, tmp_path: Path, capsys) -> None:
    """Naming a channel the new config does not have exits 1 with a message."""
    assert main(["replay", "--channel", "nope", "-c", str(stored), "--dry-run"]) == 1
    assert "has no channel 'nope'" in capsys.readouterr().err
