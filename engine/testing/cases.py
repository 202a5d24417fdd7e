"""Test cases: the ``tests:`` block of a config and sidecar ``*.test.yaml`` files, with their places.

A sidecar names the config it tests (relative to itself) and lists cases (``fixtures:`` may hold
anything, for YAML anchors the cases refer to)::

    config: radbridge.yaml
    tests:
      - name: ADT^A04 reaches the folder
        channel: his-inbound
        input: |
          MSH|^~\\&|HIS|HOSP|RADBRIDGE|RAD|20261201120000||ADT^A04|MSG1|P|2.3.1
          PID|1||12345^^^HOSP||DOE^JOHN
        expect:
          ack: AA
          outputs:
            adt-folder: {PID-5.1: DOE}

Every case keeps the ``file:line`` of its ``name`` so that a failure can point at it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from engine.config.errors import ConfigIssue, Mark, pydantic_issues
from engine.config.models import Strict
from engine.config.yamlpos import PositionMap, load_yaml

SIDECAR_SUFFIX = ".test.yaml"


class Mock(Strict):
    """What a swapped destination does instead of its real work."""

    response: str | None = Field(None, description="text every successful send answers with (an ACK, say)")
    fail_times: int = Field(0, ge=0, description="the first N sends fail (the queue retries them)")


class Expect(Strict):
    """What must come out of one case."""

    ack: str | list[str] | None = Field(None, description="MSA-1 of the ACK (a list: one per input message)")
    ack_text: str | None = Field(None, description="text the last ACK must contain (MSA-3 or ERR)")
    outputs: dict[str, list[dict[str, Any]] | dict[str, Any]] = Field(
        default_factory=dict,
        description="destination (or channel.destination) -> field assertions: a mapping for exactly one "
        "output, a list for that many outputs in order",
    )
    no_output_from: list[str] = Field(default_factory=list, description="destinations that must get nothing")
    golden: dict[str, str] = Field(
        default_factory=dict, description="destination -> file with its whole output (outputs joined by a blank line)"
    )
    worklist: list[dict[str, Any]] | None = Field(
        None, description="the open worklist items afterwards: DICOM keyword (or Sequence[0].Keyword) -> value"
    )


class Step(Strict):
    """Input given to a channel before the case's own (an ADT before the order it tests)."""

    channel: str = Field(description="the channel whose source gets the input")
    input: str | list[str] | None = Field(None, description="HL7 message(s), newlines for segment ends")
    input_file: str | list[str] | None = Field(None, description="file(s) with HL7 message(s)")
    dicom: dict[str, Any] | None = Field(None, description="attributes of a stored DICOM instance (dicom.stored)")

    @model_validator(mode="after")
    def _one_input(self) -> Step:
        if sum(getattr(self, k) is not None for k in ("input", "input_file", "dicom")) != 1:
            raise ValueError("give exactly one of input, input_file, dicom")
        return self


class Case(Strict):
    """One test case."""

    name: str
    before: list[Step] = Field(default_factory=list, description="inputs to run first (each must be accepted)")
    channel: str | None = Field(None, description="the channel whose source gets the input")
    target_mapping: str | None = Field(None, description="render only this template (path from the config folder)")
    input: str | list[str] | None = Field(None, description="HL7 message(s), newlines for segment ends")
    input_file: str | list[str] | None = Field(None, description="file(s) with HL7 message(s)")
    dicom: dict[str, Any] | None = Field(None, description="attributes of a stored DICOM instance (dicom.stored)")
    mocks: dict[str, Mock] = Field(default_factory=dict, description="destination name -> what it answers")
    expect: Expect = Field(default_factory=Expect)

    @model_validator(mode="after")
    def _one_each(self) -> Case:
        inputs = [k for k in ("input", "input_file", "dicom") if getattr(self, k) is not None]
        if len(inputs) != 1:
            raise ValueError("give exactly one of input, input_file, dicom")
        if (self.channel is None) == (self.target_mapping is None):
            raise ValueError("give exactly one of channel, target_mapping")
        if self.target_mapping is not None and self.dicom is not None:
            raise ValueError("target_mapping renders HL7 input: use input or input_file")
        return self


@dataclass
class LoadedCase:
    """A case with where it was written."""

    case: Case
    mark: Mark
    base: Path  # the folder its relative paths (input_file, golden) start from


@dataclass
class Suite:
    """The cases of one file for one config, and the problems found reading them."""

    config: Path
    source: Path
    cases: list[LoadedCase] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)


def _cases(raw: Any, positions: PositionMap, loc: tuple, base: Path, suite: Suite) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        suite.issues.append(ConfigIssue(positions.lookup(loc), ".".join(map(str, loc)), "tests must be a list"))
        return
    for i, item in enumerate(raw):
        try:
            case = Case.model_validate(item)
        except ValidationError as exc:
            suite.issues.extend(pydantic_issues(exc, positions, loc + (i,), model=Case))
            continue
        suite.cases.append(LoadedCase(case, positions.lookup(loc + (i, "name")), base))


def load_config_tests(config: Path) -> Suite:
    """The ``tests:`` block of *config*."""
    config = Path(config)
    data, positions, issues = load_yaml(config)
    suite = Suite(config=config, source=config, issues=list(issues))
    if isinstance(data, dict):
        _cases(data.get("tests"), positions, ("tests",), config.resolve().parent, suite)
    return suite


def load_sidecar(path: Path) -> Suite:
    """A ``*.test.yaml`` file: its ``config`` and ``tests``."""
    path = Path(path)
    data, positions, issues = load_yaml(path)
    base = path.resolve().parent
    config = data.get("config") if isinstance(data, dict) else None
    suite = Suite(config=base / str(config or ""), source=path, issues=list(issues))
    if not isinstance(config, str) or not config:
        suite.issues.append(ConfigIssue(positions.lookup(()), "config", "a test file names its config: config: FILE"))
        return suite
    extra = sorted(set(data) - {"config", "tests", "fixtures"})
    for key in extra:
        suite.issues.append(
            ConfigIssue(positions.lookup((key,), key=True), key, "unknown key (config, tests, fixtures)")
        )
    _cases(data.get("tests"), positions, ("tests",), base, suite)
    return suite


def is_sidecar(path: Path) -> bool:
    """True for ``*.test.yaml`` files."""
    return path.name.endswith(SIDECAR_SUFFIX)


def _has_tests(path: Path) -> bool:
    try:
        data, _, _ = load_yaml(path)
    except Exception:  # noqa: BLE001 - not a config we can read: not ours to run
        return False
    return isinstance(data, dict) and "tests" in data and "channels" in data


SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "data"})


def _sidecars(folder: Path) -> list[Path]:
    """``*.test.yaml`` under *folder*, not looking into hidden folders, virtualenvs or data folders."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(root) / f for f in sorted(files) if f.endswith(SIDECAR_SUFFIX)]
    return found


def collect(target: Path) -> list[Suite]:
    """Every suite *target* names: a sidecar, a config (its block and the sidecars naming it), or a folder."""
    target = Path(target)
    if target.is_dir():
        suites = [load_config_tests(p) for p in sorted(target.glob("*.yaml")) if not is_sidecar(p) and _has_tests(p)]
        suites += [load_sidecar(p) for p in _sidecars(target)]
        return suites
    if is_sidecar(target):
        return [load_sidecar(target)]
    suites = [load_config_tests(target)]
    me = target.resolve()
    for side in sorted(target.resolve().parent.glob("*" + SIDECAR_SUFFIX)):
        suite = load_sidecar(side)
        if suite.config.resolve() == me:
            suites.append(suite)
    return suites
