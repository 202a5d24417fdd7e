"""Fixtures for the integration tests: engines and downstreams that are always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import DownstreamReceiver, EngineProcess
from tests.integration.orthanc import orthanc  # noqa: F401 - the Orthanc fixture for every integration test


@pytest.fixture
def downstream_factory() -> Iterator[Callable[[], DownstreamReceiver]]:
    """Start downstream MLLP receivers; every one is stopped at teardown."""
    made: list[DownstreamReceiver] = []

    def make(port: int = 0) -> DownstreamReceiver:
        receiver = DownstreamReceiver(port).start()
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture
def downstream(downstream_factory: Callable[[], DownstreamReceiver]) -> DownstreamReceiver:
    """One running downstream receiver."""
    return downstream_factory()


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    """Build (not start) engine processes; every one still running at teardown is killed."""
    made: list[EngineProcess] = []

    def make(config: Path, env: dict[str, str] | None = None) -> EngineProcess:
        log_dir = tmp_path / f"logs-{len(made)}"
        log_dir.mkdir()
        engine = EngineProcess(config, log_dir, env)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.kill9()
