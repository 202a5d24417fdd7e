"""radbridge_listener_up: set by ChannelService when its source starts, stops or fails to bind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock

from channels.mllp.listener import MLLPListener, MLLPListenerConfig
from engine.components import BuildContext
from engine.metrics import Metrics
from engine.pipeline import CompiledChannel
from engine.service import ChannelService
from engine.store.store import Store
from tests.engine.conftest import result_of


class RefusingReactor(MemoryReactorClock):
    """A memory reactor whose ports are all taken."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:  # noqa: N802
        """Fail as a port in use does."""
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


def channel(store: Store, reactor: Any, metrics: Metrics, tmp_path: Path) -> ChannelService:
    """A channel named ``in`` whose source is a real MLLP listener on *reactor*."""
    ctx = BuildContext(reactor=reactor, channel="in", component="source", config_dir=tmp_path, data_dir=tmp_path,
                       metrics=metrics)  # fmt: skip
    source = MLLPListener(MLLPListenerConfig(type="mllp_listener", port=2575), ctx)
    return ChannelService(CompiledChannel("in"), source, {}, store, reactor, metrics=metrics)


def up(metrics: Metrics) -> float | None:
    """The listener_up sample of channel ``in``."""
    labels = {"channel": "in", "connector": "mllp_listener"}
    return metrics.registry.get_sample_value("radbridge_listener_up", labels)


def test_listener_up_while_listening_and_down_after_stop(sqlite_store: Store, tmp_path: Path) -> None:
    """The gauge is 1 once the source listens and 0 once the channel stopped."""
    reactor, metrics = MemoryReactorClock(), Metrics()
    svc = channel(sqlite_store, reactor, metrics, tmp_path)
    assert up(metrics) is None
    assert result_of(svc.startService()) is None
    assert len(reactor.tcpServers) == 1
    assert up(metrics) == 1.0
    assert "# TYPE radbridge_listener_up gauge" in metrics.exposition().decode()
    result_of(svc.stopService())
    assert up(metrics) == 0.0


def test_listener_down_when_bind_fails(sqlite_store: Store, tmp_path: Path) -> None:
    """A source that cannot bind leaves the gauge at 0 and the start fails as before."""
    metrics = Metrics()
    svc = channel(sqlite_store, RefusingReactor(), metrics, tmp_path)
    failure = result_of(svc.startService())
    with pytest.raises(CannotListenError):
        failure.raiseException()
    assert up(metrics) == 0.0
