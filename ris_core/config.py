"""The ``ris:`` section: templates, output channels, scheduling and id rules, defaults for what orders lack.

Templates are looked up in the config folder first, then in ``mappings/templates/`` (the engine's
Jinja environment searches both), and compiled when the service is built (:func:`compile_ris`), so
a syntax error stops ``radbridge run`` before anything binds; :func:`check_templates` lists the same
problems for ``radbridge validate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.config.models import Duration, Strict

StatusMessage = Literal["ORM_O01", "OMI_O23"]
TEMPLATE_KEYS = ("worklist_template", "status_template", "report_template", "charge_template")


class RisDefaults(Strict):
    """Values used when an order (or a patient) does not carry them."""

    issuer_of_patient_id: str | None = Field(None, description="IssuerOfPatientID when PID-3.4 is empty")
    modality: str | None = Field(None, description="modality when OBR-24 / IPC-5 is empty")
    priority: str = Field("ROUTINE", description="RequestedProcedurePriority when TQ1-9 / ORC-7.6 / OBR-27.6 is empty")
    station_name: str | None = Field(None, description="ScheduledStationName when IPC-7 is empty (v2.3.1 has none)")
    coding_scheme: str = Field("L", description="CodingSchemeDesignator when a code's coding system is empty")
    character_set: str = Field("ISO_IR 192", description="SpecificCharacterSet of worklist items (UTF-8)")


class RisConfig(Strict):
    """The RIS core (top-level ``ris:``)."""

    worklist_template: str = Field("worklist_item.yaml.j2", description="renders one SPS as YAML of DICOM keywords")
    status_template: str = Field("order_status.hl7.j2", description="order status to the placer (ORM^O01/OMI^O23)")
    report_template: str = Field("oru_r01.hl7.j2", description="final/corrected report to the EHR (ORU^R01)")
    charge_template: str = Field("dft_p03.hl7.j2", description="charge on completion (DFT^P03)")
    status_channel: str | None = Field(None, description="channel the order status messages are ingested into")
    report_channel: str | None = Field(None, description="channel the ORU^R01 reports are ingested into")
    charge_channel: str | None = Field(None, description="channel the DFT^P03 charges are ingested into")
    status_message: StatusMessage | None = Field(None, description="status message type; default: as the order came")
    auto_schedule: bool = Field(True, description="NW without a start time is scheduled now (else: ORDERED)")
    accession_prefix: str = Field("RB", description="prefix of generated accession numbers (at most 6 characters)")
    study_stable_timeout: Duration | None = Field(
        None, description="complete IN_PROGRESS orders without MPPS whose study got no image for this long"
    )
    sweep_interval: Duration = Field(60.0, description="how often the study-stable sweep runs")
    case_insensitive_pn: bool = Field(True, description="worklist matching of person names ignores case")
    station_aes: dict[str, list[str]] = Field(
        default_factory=dict, description="modality -> default ScheduledStationAETitle values"
    )
    application: str = Field("RADBRIDGE", description="MSH-3 of generated messages and filler order namespace")
    facility: str = Field("", description="MSH-4 of generated messages")
    defaults: RisDefaults = Field(default_factory=RisDefaults)

    @field_validator("accession_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if len(value) > 6 or not value.isascii() or not (value.isalnum() or value == ""):
            raise ValueError("accession_prefix: at most 6 letters or digits (generated accessions are 16 characters)")
        return value

    @field_validator("station_aes")
    @classmethod
    def _aes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for modality, aes in value.items():
            for ae in aes:
                if not ae or len(ae) > 16 or "\\" in ae:
                    raise ValueError(f"station_aes.{modality}: {ae!r} is not an AE title (1-16 characters)")
        return value

    def channel_refs(self) -> dict[str, str | None]:
        """The channels the RIS ingests its outgoing messages into (``radbridge validate`` checks they exist)."""
        return {"status_channel": self.status_channel, "report_channel": self.report_channel,
                "charge_channel": self.charge_channel}  # fmt: skip

    def check(self, env: Any = None, config_dir: Path | str | None = None) -> list[tuple[str, str]]:
        """``(key, message)`` for each template that does not compile (a hook for ``radbridge validate``)."""
        return check_templates(self, env, config_dir)


@dataclass
class CompiledRis:
    """A validated ``ris:`` section with its templates compiled (what the thd functions get as ``rt``)."""

    config: RisConfig
    worklist: Any
    status: Any
    report: Any
    charge: Any


def _env(env: Any, config_dir: Path | str | None) -> Any:
    if env is not None:
        return env
    from mappings.environment import make_environment

    return make_environment([str(config_dir)] if config_dir else [])


def compile_ris(config: RisConfig, env: Any = None, config_dir: Path | str | None = None) -> CompiledRis:
    """Compile the four templates; raises ``TemplateCompileError`` naming the file and line."""
    from mappings.environment import load_template

    env = _env(env, config_dir)
    t = [load_template(env, getattr(config, key)) for key in TEMPLATE_KEYS]
    return CompiledRis(config, *t)


def check_templates(config: RisConfig, env: Any = None, config_dir: Path | str | None = None) -> list[tuple[str, str]]:
    """``(key, message)`` for every template of *config* that does not compile (for config validation)."""
    from mappings.environment import TemplateCompileError, load_template

    env = _env(env, config_dir)
    problems = []
    for key in TEMPLATE_KEYS:
        try:
            load_template(env, getattr(config, key))
        except TemplateCompileError as exc:
            problems.append((key, str(exc)))
    return problems
