"""Run suites of cases and report each as ``name [file:line]: reason``."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config.errors import ConfigError, Mark
from engine.config.models import TransformerConfig
from engine.config.validate import ValidatedConfig, validate_config
from engine.hl7.message import HL7Message
from engine.testing import expect
from engine.testing.cases import LoadedCase, Suite
from engine.testing.harness import Harness, Outcome, messages

MAPPING_OUTPUT = "target_mapping.output"  # what a target_mapping case's rendered output is called


@dataclass
class CaseResult:
    """One case's verdict."""

    name: str
    mark: Mark | None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """No problem found."""
        return not self.problems

    def format(self) -> str:
        """``name [file:line]: reason`` (one line per reason)."""
        where = f" [{self.mark.file}:{self.mark.line}]" if self.mark else ""
        return "\n".join(f"{self.name}{where}: {p}" for p in self.problems)


def template_store(folder: Path) -> Path:
    """A migrated SQLite file that every case copies (migrating once per suite, not per case)."""
    from engine.store.db import make_engine, upgrade

    path = folder / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return path


def render_mapping(vc: ValidatedConfig, lc: LoadedCase) -> Outcome:
    """A ``target_mapping`` case: the template alone, rendered for each input message."""
    out = Outcome()
    build = vc.registry.get("transformer", "jinja").build
    from engine.components import BuildContext

    ctx = BuildContext(None, "target_mapping", "transformer", vc.config_dir, vc.config_dir, jinja_env=vc.jinja_env)
    transformer = build(TransformerConfig(template_file=lc.case.target_mapping), ctx)
    out.outputs[MAPPING_OUTPUT] = [
        transformer.transform(HL7Message(text), {"channel": "target_mapping"}) or ""
        for text in messages(lc.case, lc.base)
    ]
    return out


def run_case(
    vc: ValidatedConfig, lc: LoadedCase, template_db: Path | None, *, update_golden: bool = False
) -> CaseResult:
    """Run one case and check it."""
    started = time.perf_counter()
    result = CaseResult(lc.case.name, lc.mark)
    harness = None
    try:
        if lc.case.target_mapping is not None:
            outcome = render_mapping(vc, lc)
        else:
            harness = Harness(vc, template_db)
            harness.start(lc.case.mocks)
            outcome = harness.run(lc.case, lc.base)
        if outcome.error:
            result.problems.append(outcome.error)
        else:
            result.problems += expect.check_acks(lc.case, outcome)
            result.problems += expect.check_outputs(lc.case, outcome)
            result.problems += expect.check_golden(lc.case, outcome, lc.base, update=update_golden)
            result.problems += expect.check_worklist(lc.case, outcome)
    except Exception as exc:  # noqa: BLE001 - a case that cannot run is a failing case, not a crash
        result.problems.append(f"could not run: {type(exc).__name__}: {exc}")
    finally:
        if harness is not None:
            try:
                harness.stop()
            except Exception as exc:  # noqa: BLE001 - report, keep running the other cases
                result.problems.append(f"could not stop the engine: {exc}")
    result.seconds = time.perf_counter() - started
    return result


def run_suite(suite: Suite, *, update_golden: bool = False, select: str | None = None) -> list[CaseResult]:
    """Every case of *suite* (those whose name contains *select*); problems reading it are failures too."""
    results = [CaseResult(issue.path or suite.source.name, issue.mark, [issue.message]) for issue in suite.issues]
    cases = [lc for lc in suite.cases if select is None or select in lc.case.name]
    if not cases:
        return results
    try:
        vc = validate_config(suite.config, check_ports=False)
    except ConfigError as exc:
        return results + [
            CaseResult(f"config {suite.config.name}", i.mark, [f"{i.path}: {i.message}"]) for i in exc.errors
        ]
    except OSError as exc:
        return results + [CaseResult(f"config {suite.config}", None, [str(exc)])]
    with tempfile.TemporaryDirectory(prefix="radbridge-tests-") as tmp:
        db = template_store(Path(tmp))
        results += [run_case(vc, lc, db, update_golden=update_golden) for lc in cases]
    return results


_validated: dict[Path, tuple[ValidatedConfig, Path]] = {}


def run_one(suite: Suite, lc: LoadedCase | None) -> CaseResult:
    """One case of *suite* (``None``: the problems reading the suite), the config validated once per process."""
    if lc is None:
        problems = [f"{i.path}: {i.message}" if i.path else i.message for i in suite.issues]
        return CaseResult(suite.source.name, suite.issues[0].mark if suite.issues else None, problems)
    key = suite.config.resolve()
    if key not in _validated:
        try:
            vc = validate_config(suite.config, check_ports=False)
        except ConfigError as exc:
            return CaseResult(lc.case.name, lc.mark, [f"config: {i.format()}" for i in exc.errors])
        _validated[key] = (vc, template_store(Path(tempfile.mkdtemp(prefix="radbridge-tests-"))))
    vc, db = _validated[key]
    return run_case(vc, lc, db)


def summary(results: list[CaseResult], seconds: float) -> str:
    """``N passed, M failed in S s``."""
    failed = sum(not r.passed for r in results)
    return f"{len(results) - failed} passed, {failed} failed in {seconds:.2f} s"


def quiet_logs() -> Any:
    """Keep the engine's own log lines out of the test report (errors still show)."""
    import logging

    logger = logging.getLogger("radbridge")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    return lambda: logger.setLevel(previous)
