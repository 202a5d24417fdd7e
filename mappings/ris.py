"""Rendering the RIS's templates: worklist items (YAML of DICOM keywords → DICOM JSON) and HL7 messages.

A worklist template renders YAML mapping DICOM keywords to values (DESIGN.md §3.10)::

    PatientName: "DOE^JOHN"
    ScheduledProcedureStepSequence:
      - Modality: CT
        ScheduledStationAETitle: [CT1, CT2]

:func:`render_worklist_item` checks every keyword against pydicom's dictionary and every value
against its VR (a list is a multi-valued attribute; a sequence is a list of mappings; ``null`` or
``""`` is an empty attribute), builds a pydicom ``Dataset`` and returns its DICOM JSON model
(PS3.18 F.2). Anything wrong raises :class:`WorklistTemplateError` naming the keyword (as a path,
``ScheduledProcedureStepSequence[0].Modality``) and, when it can be found, the template line.

The RIS's templates (stock ones in ``mappings/templates/``: ``worklist_item.yaml.j2``,
``order_status.hl7.j2``, ``oru_r01.hl7.j2``, ``dft_p03.hl7.j2``, helpers in ``ris_hl7_macros.j2``)
see plain dicts: ``patient`` (``patient_id``, ``issuer``, ``name`` as a DICOM PN, ``birth_date``,
``sex``, ``other_ids``, ``attrs``), ``order`` (``accession``, ``requested_procedure_id``,
``study_uid``, ``procedure`` and ``requested_procedure`` as ``{code, text, scheme}``, ``modality``,
``priority``, ``reason``, ``ordering_provider``, ``referring_physician``, ``placer``/``filler`` as
``{id, namespace}``, ``state``, ``placer_app``, ``message``, ``attrs``), ``sps`` (one step for a
worklist item, the list of steps for a status message: ``sps_id``, ``status``, ``modality``,
``station_ae`` (a list), ``station_name``, ``location``, ``start_date``, ``start_time``,
``description``, ``protocol_codes``, ``performing_physician``); a worklist item also ``defaults``
(``ris.defaults``); HL7 messages also ``msh`` (``sending_application``, ``sending_facility``,
``receiving_application``, ``receiving_facility``, ``control_id``, ``version``), ``status``
(``control``, ``order_status``, ``event``, ``from_state``, ``to_state``, ``message``),
``changed_at``, ``report`` (``version``, ``status``, ``text``, ``lines``, ``author``,
``observed_at``) and ``charge`` (``code``, ``quantity``, ``transaction_date``, ``transaction_id``).
"""

from __future__ import annotations

import re
import traceback
import warnings
from collections.abc import Mapping
from typing import Any

import yaml
from pydicom import config as dicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

from mappings.transformer import normalise_hl7

NUMERIC_VRS = frozenset({"US", "UL", "SS", "SL", "SV", "UV", "FL", "FD"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "AT"})


class WorklistTemplateError(ValueError):
    """A worklist template rendered something that is not a valid DICOM worklist item."""

    def __init__(self, message: str, *, keyword: str = "", line: int | None = None, template: str = "") -> None:
        self.keyword, self.line, self.template, self.message = keyword, line, template, message
        where = f"{template}:{line}" if template and line else template or "<worklist template>"
        super().__init__(f"{where}: {keyword + ': ' if keyword else ''}{message}")


def _source_lines(template: Any) -> list[str]:
    """The template's source lines (empty when the loader cannot give them)."""
    env, name = template.environment, template.name
    try:
        return env.loader.get_source(env, name)[0].splitlines() if env.loader and name else []
    except Exception:  # noqa: BLE001 - a template built from a string has no source to read back
        return []


def _line_of(lines: list[str], keyword: str) -> int | None:
    """The first template line where *keyword* is a mapping key (1-based)."""
    key = re.compile(rf"^\s*(?:-\s+)?{re.escape(keyword)}\s*:")
    return next((i for i, line in enumerate(lines, 1) if key.match(line)), None)


def _render_line(exc: BaseException, filename: str | None) -> int | None:
    lineno = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if filename is not None and frame.filename == filename:
            lineno = frame.lineno
    return lineno


class _Builder:
    """Turns the parsed YAML into a Dataset, checking keywords and values."""

    def __init__(self, template: Any) -> None:
        self.template = template
        self.name = template.filename or template.name or "<worklist template>"
        self._lines: list[str] | None = None

    def fail(self, path: str, keyword: str, message: str) -> WorklistTemplateError:
        if self._lines is None:
            self._lines = _source_lines(self.template)
        return WorklistTemplateError(message, keyword=path, line=_line_of(self._lines, keyword), template=self.name)

    def dataset(self, data: Mapping[Any, Any], prefix: str = "") -> Dataset:
        ds = Dataset()
        for keyword, value in data.items():
            path = f"{prefix}{keyword}"
            tag = tag_for_keyword(keyword) if isinstance(keyword, str) else None
            if tag is None:
                raise self.fail(path, str(keyword), "not a DICOM keyword in the data dictionary")
            vr = dictionary_VR(tag).split(" or ")[0]
            if vr == "SQ":
                if value is None or value == "":
                    value = []
                if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
                    raise self.fail(path, keyword, "a sequence must be a list of mappings (items)")
                items = [self.dataset(item, f"{path}[{i}].") for i, item in enumerate(value)]
                setattr(ds, keyword, items)
                continue
            if vr in BINARY_VRS:
                raise self.fail(path, keyword, f"VR {vr} values cannot be given in a worklist template")
            values = value if isinstance(value, list) else [value]
            checked = [self.value(path, keyword, vr, v) for v in values if v is not None and v != ""]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setattr(ds, keyword, checked if len(checked) > 1 else (checked[0] if checked else None))
        return ds

    def value(self, path: str, keyword: str, vr: str, value: Any) -> Any:
        if isinstance(value, bool | Mapping | list):
            raise self.fail(path, keyword, f"{type(value).__name__} is not a value of VR {vr}")
        if vr in NUMERIC_VRS:
            try:
                number = float(value) if vr in ("FL", "FD") else int(value)
            except (TypeError, ValueError):
                raise self.fail(path, keyword, f"{value!r} is not a number (VR {vr})") from None
            return number
        text = str(value)
        if vr == "PN":
            groups = text.split("=")
            if len(groups) > 3 or any(len(g.split("^")) > 5 for g in groups):
                raise self.fail(path, keyword, f"{text!r} is not a person name (at most 5 components, 3 groups)")
        try:
            validate_value(vr, text, dicom_config.RAISE)
        except ValueError as exc:
            raise self.fail(path, keyword, f"invalid value for VR {vr}: {str(exc).split(': ', 1)[-1]}") from None
        return text


def render_worklist_item(template: Any, **variables: Any) -> dict[str, Any]:
    """Render *template* with *variables*, validate the YAML against the DICOM dictionary; the DICOM JSON."""
    name = template.filename or template.name or "<worklist template>"
    try:
        text = template.render(**variables)
    except Exception as exc:
        line = _render_line(exc, template.filename)
        raise WorklistTemplateError(f"{type(exc).__name__}: {exc}", line=line, template=name) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (rendered line {mark.line + 1})" if mark is not None else ""
        raise WorklistTemplateError(f"the rendered item is not YAML{where}", template=name) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise WorklistTemplateError("the rendered item must be a mapping of DICOM keywords", template=name)
    return _Builder(template).dataset(data).to_json_dict()


def render_hl7(template: Any, **variables: Any) -> str:
    """Render an HL7 template: CR-separated segments, blank lines dropped (``""`` if nothing is left)."""
    return normalise_hl7(template.render(**variables))
