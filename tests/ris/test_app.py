"""The RIS wired by the engine: ``ris:`` validated, the service built by App, channels feeding it and its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from engine.app import App
from engine.config.errors import ConfigError
from engine.config.validate import validate_config
from engine.event import Event
from engine.hl7.message import HL7Message
from mappings.environment import TemplateCompileError
from ris_core import orders
from ris_core.service import RisService
from tests.engine.conftest import flush
from tests.ris import messages as m
from tests.ris.conftest import settle

CONFIG = """\
data_dir: {data}
metrics: {{enabled: false}}
ris:
  status_channel: to-his
  report_channel: to-ehr
  station_aes: {{CT: [CT1]}}
  {extra}
channels:
  - name: his
    source: {{type: memory}}
    ack: {{mode: after_delivery}}
    destinations: [{{name: ris, type: ris}}]
  - name: to-his
    source: {{type: memory}}
    destinations: [{{name: out, type: memory}}]
  - name: to-ehr
    source: {{type: memory}}
    destinations: [{{name: out, type: memory}}]
  - name: modality
    source: {{type: memory}}
    destinations: [{{name: ris, type: ris}}]
"""


def write(tmp_path: Path, extra: str = "") -> Path:
    """The config file."""
    path = tmp_path / "radbridge.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "data", extra=extra))
    return path


def test_engine_builds_and_feeds_the_ris(tmp_path: Path) -> None:
    """App builds the RIS from ``ris:``; an order through a channel is answered AA and its status reaches to-his."""
    clock = Clock()
    vc = validate_config(write(tmp_path), check_ports=False)
    app = App(vc, clock)
    assert isinstance(app.ris, RisService) and app.ris.config.status_channel == "to-his"
    settle(app.start(), app.store, clock)
    try:
        result = settle(app.services["his"].source.inject(m.orm()), app.store, clock)
        assert HL7Message(result.ack.decode())["MSA-1"] == "AA"
        for _ in range(5):
            flush(app.store, clock)
        out = app.services["to-his"].queues["out"].connector
        (status,) = [HL7Message(t) for t in out.received]
        assert (status["ORC-1"], status["ORC-5"], status["OBR-18"]) == ("SC", "SC", "ACC100")
    finally:
        settle(app.stop(), app.store, clock)


def test_unknown_ris_keys_are_config_errors(tmp_path: Path) -> None:
    """An unknown key under ``ris:`` is reported with its place, like every config error."""
    with pytest.raises(ConfigError) as info:
        validate_config(write(tmp_path, "colour: blue"), check_ports=False)
    assert "ris.colour" in str(info.value)


def test_template_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    """A configured template with a syntax error fails validation at the ris: key, naming the template's line."""
    (tmp_path / "status.hl7.j2").write_text("MSH|^~\\&\n{% for %}\n")
    with pytest.raises(ConfigError) as info:
        validate_config(write(tmp_path, "status_template: status.hl7.j2"), check_ports=False)
    text = str(info.value)
    assert "radbridge.yaml:" in text and "ris.status_template" in text and "status.hl7.j2:2:" in text


def test_template_syntax_error_stops_the_build(tmp_path: Path) -> None:
    """Building the RIS compiles its templates too (a template broken after validation): before anything binds."""
    template = tmp_path / "status.hl7.j2"
    template.write_text("MSH|^~\\&\n")
    vc = validate_config(write(tmp_path, "status_template: status.hl7.j2"), check_ports=False)
    template.write_text("MSH|^~\\&\n{% for %}\n")
    with pytest.raises(TemplateCompileError) as info:
        App(vc, Clock())
    assert info.value.lineno == 2 and "status.hl7.j2" in str(info.value)


def _received(app: App, channel: str) -> list[HL7Message]:
    for _ in range(5):
        flush(app.store, app.reactor)
    return [HL7Message(t) for t in app.services[channel].queues["out"].connector.received]


def test_scheduled_workflow_in_process(tmp_path: Path) -> None:
    """ADT, order, MPPS (the real ris_core.mpps), images, report, merge: states and outputs as IHE SWF says."""
    clock = Clock()
    app = App(validate_config(write(tmp_path), check_ports=False), clock)
    settle(app.start(), app.store, clock)
    his = app.services["his"].source

    def hl7(text: str) -> str:
        return HL7Message(settle(his.inject(text), app.store, clock).ack.decode())["MSA-1"]

    try:
        assert hl7(m.adt("A04", "A1")) == "AA" and hl7(m.orm(study_uid=None)) == "AA"
        order = app.store.read_sync(orders.thd_find_order, accession="ACC100")
        refs = [{"AccessionNumber": "ACC100", "StudyInstanceUID": order["study_uid"], "ScheduledProcedureStepID":
                 "SPS100", "RequestedProcedureID": "RP100"}]  # fmt: skip
        create = {"PerformedProcedureStepStatus": "IN PROGRESS", "ScheduledStepAttributesSequence": refs,
                  "PatientID": "P100", "PatientName": "DOE^JOHN", "Modality": "CT", "PerformedStationAETitle": "CT1"}  # fmt: skip
        assert settle(app.ris.mpps_create("1.2.3.4.77", create), app.store, clock).status == 0
        event = Event("dicom.stored", {"StudyInstanceUID": order["study_uid"], "AccessionNumber": "ACC100"})
        settle(app.services["modality"].ingest_event(event, "test"), app.store, clock)
        done = {"PerformedProcedureStepStatus": "COMPLETED"}
        assert settle(app.ris.mpps_set("1.2.3.4.77", done), app.store, clock).status == 0
        assert settle(app.ris.mpps_set("1.2.3.4.77", done), app.store, clock).status != 0  # final already
        assert hl7(m.oru("R1")) == "AA"
        detail = app.store.read_sync(orders.thd_find_order, accession="ACC100")
        assert detail["state"] == "FINALIZED"
        assert [s["ORC-5"] for s in _received(app, "to-his")] == ["SC", "IP", "CM"]
        assert [(r.message_type, r["OBR-25"]) for r in _received(app, "to-ehr")] == [("ORU^R01", "F")]
        assert hl7(m.adt("A04", "A2", patient="P200")) == "AA"
        assert hl7(m.adt("A40", "A3", patient="P200", merged="P100")) == "AA"
        assert hl7(m.orm("O2", accession="ACC101", placer="PL101")) == "AE"
    finally:
        settle(app.stop(), app.store, clock)
