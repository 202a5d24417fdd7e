"""pytest plugin: every ``*.test.yaml`` file pytest walks into is collected, one test item per case.

Installed as the ``radbridge`` plugin (``pytest11`` entry point): ``pytest channels/`` in a
hospital's config repository runs its channel tests next to its other tests. A failing case
reports the same ``name [file:line]: reason`` lines as ``radbridge test``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.testing.cases import LoadedCase, Suite, is_sidecar, load_sidecar


class CaseFailed(Exception):
    """A case's problems."""


def pytest_collect_file(parent: Any, file_path: Path) -> Any:
    """Collect ``*.test.yaml`` files."""
    if is_sidecar(file_path):
        return SidecarFile.from_parent(parent, path=file_path)
    return None


class SidecarFile(pytest.File):
    """One ``*.test.yaml`` file."""

    def collect(self) -> Any:
        """One item per case; problems reading the file are one failing item."""
        suite = load_sidecar(self.path)
        if suite.issues:
            yield CaseItem.from_parent(self, name="<file>", suite=suite, case=None)
        for lc in suite.cases:
            yield CaseItem.from_parent(self, name=lc.case.name, suite=suite, case=lc)


class CaseItem(pytest.Item):
    """One case, run as ``radbridge test`` runs it."""

    def __init__(self, *, suite: Suite, case: LoadedCase | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.suite, self.case = suite, case

    def runtest(self) -> None:
        """Run the case; raise CaseFailed with its problems."""
        from engine.testing.runner import run_one

        result = run_one(self.suite, self.case)
        if not result.passed:
            raise CaseFailed(result.format())

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        """The case's problems, without a traceback."""
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        """Where the case is written."""
        line = self.case.mark.line - 1 if self.case else None
        return self.path, line, f"radbridge case: {self.name}"
