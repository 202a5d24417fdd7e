"""Worklist item templates: YAML of DICOM keywords validated against pydicom's dictionary, stored as DICOM JSON."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from engine.store.store import Store
from mappings.environment import TemplateCompileError, make_environment
from mappings.ris import WorklistTemplateError, render_worklist_item
from ris_core.config import RisConfig, check_templates, compile_ris
from ris_core.hl7in import Rejected
from ris_core.schema import ris_orders
from tests.ris import messages as m
from tests.ris.conftest import apply, rows


def template(tmp_path: Path, text: str, name: str = "wl.yaml.j2"):
    """A template file *name* in *tmp_path* with *text*, loaded from there."""
    (tmp_path / name).write_text(text)
    return make_environment([str(tmp_path)]).get_template(name)


def test_values_become_dicom_json(tmp_path: Path) -> None:
    """Keywords map to tags with their VR; lists are multi-valued; sequences are lists of items; null is empty."""
    item = render_worklist_item(template(tmp_path, (
        'PatientName: {{ name | tojson }}\n'
        'PatientID: 12345\n'
        'PatientBirthDate: null\n'
        'ScheduledProcedureStepSequence:\n'
        '  - ScheduledStationAETitle: ["CT1", "CT2"]\n'
        '    ScheduledProcedureStepStartDate: "20240305"\n'
        '    ScheduledProtocolCodeSequence: []\n'
    )), name="DOE^JOHN")  # fmt: skip
    assert item["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert item["00100020"] == {"vr": "LO", "Value": ["12345"]}
    assert item["00100030"] == {"vr": "DA"}
    step = item["00400100"]["Value"][0]
    assert step["00400001"] == {"vr": "AE", "Value": ["CT1", "CT2"]}
    assert step["00400008"] == {"vr": "SQ", "Value": []}


@pytest.mark.parametrize(
    ("text", "keyword", "line", "words"),
    [
        ("PatientID: P1\nPatientNmae: X\n", "PatientNmae", 2, "not a DICOM keyword"),
        ("PatientID: P1\nPatientBirthDate: '2024-01-31'\n", "PatientBirthDate", 2, "invalid value for VR DA"),
        ("PatientBirthDate: '20241399'\n", "PatientBirthDate", 1, "invalid value for VR DA"),
        (
            "ScheduledProcedureStepSequence:\n  - ScheduledProcedureStepStartTime: '256000'\n",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
            2,
            "VR TM",
        ),
        ("StudyInstanceUID: '1.2.abc'\n", "StudyInstanceUID", 1, "VR UI"),
        ("PatientName: 'A^B^C^D^E^F'\n", "PatientName", 1, "person name"),
        ("ScheduledProcedureStepSequence: CT\n", "ScheduledProcedureStepSequence", 1, "list of mappings"),
        ("ScheduledProcedureStepSequence: [CT]\n", "ScheduledProcedureStepSequence", 1, "list of mappings"),
        ("PatientSex: yes\n", "PatientSex", 1, "bool"),
        ("PatientID: {a: 1}\n", "PatientID", 1, "dict"),
        (
            "PatientID: 'P1'\nScheduledProcedureStepSequence:\n  - Modalty: CT\n",
            "ScheduledProcedureStepSequence[0].Modalty",
            3,
            "not a DICOM keyword",
        ),
    ],
)
def test_invalid_items_name_the_keyword_and_line(tmp_path: Path, text: str, keyword: str, line: int,
                                                 words: str) -> None:  # fmt: skip
    """Unknown keywords, bad DA/TM/UI/PN values, sequences that are not lists of mappings: refused, placed."""
    with pytest.raises(WorklistTemplateError) as info:
        render_worklist_item(template(tmp_path, text))
    exc = info.value
    assert (exc.keyword, exc.line) == (keyword, line) and words in str(exc)
    assert str(exc).startswith(f"{tmp_path / 'wl.yaml.j2'}:{line}: {keyword}: ")


def test_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    """A rendering that is not YAML, or not a mapping, is refused."""
    with pytest.raises(WorklistTemplateError, match="not YAML"):
        render_worklist_item(template(tmp_path, "PatientID: [unclosed\n"))
    with pytest.raises(WorklistTemplateError, match="must be a mapping"):
        render_worklist_item(template(tmp_path, "- PatientID\n"))


def test_render_error_names_the_template_line(tmp_path: Path) -> None:
    """An undefined variable while rendering is a WorklistTemplateError with the template's line."""
    with pytest.raises(WorklistTemplateError) as info:
        render_worklist_item(template(tmp_path, "PatientID: P1\nPatientName: {{ nobody.name }}\n"))
    assert info.value.line == 2


def test_an_invalid_item_refuses_the_order(any_store: Store, tmp_path: Path) -> None:
    """An order whose worklist item does not validate is refused naming the keyword (not the value)."""
    (tmp_path / "worklist_item.yaml.j2").write_text("AccessionNumber: {{ order.accession | tojson }}\n"
                                                  "PatientBirthDate: '{{ patient.birth_date }}x'\n")  # fmt: skip
    rt = compile_ris(RisConfig(), make_environment([str(tmp_path)]))
    with pytest.raises(Rejected) as info:
        apply(any_store, rt, m.orm())
    assert "worklist item of order ACC100: PatientBirthDate is invalid" in info.value.reason
    assert "19700101" not in info.value.reason
    assert rows(any_store, select(ris_orders.c.id)) == []


def test_templates_compile_when_the_config_is_loaded(tmp_path: Path) -> None:
    """A syntax error in a configured template fails compile_ris and is listed by check_templates, with its line."""
    (tmp_path / "bad.hl7.j2").write_text("MSH|^~\\&\n{% if %}\n")
    cfg = RisConfig(status_template="bad.hl7.j2")
    with pytest.raises(TemplateCompileError) as info:
        compile_ris(cfg, config_dir=tmp_path)
    assert info.value.lineno == 2
    assert [key for key, _ in check_templates(cfg, config_dir=tmp_path)] == ["status_template"]
    assert cfg.check(make_environment([str(tmp_path)]))[0][1].endswith(
        "bad.hl7.j2:2: Expected an expression, got 'end of statement block'"
    )
    assert check_templates(RisConfig(), config_dir=tmp_path) == []
    (tmp_path / "order_status.hl7.j2").write_text("{{ broken\n")  # the config folder wins over the stock one
    assert [key for key, _ in check_templates(RisConfig(), config_dir=tmp_path)] == ["status_template"]
