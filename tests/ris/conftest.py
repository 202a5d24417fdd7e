"""Fixtures for RIS tests: the engine's stores and clock, a compiled RIS, and a way to apply messages."""

from __future__ import annotations

from typing import Any

import pytest

from engine.hl7.message import HL7Message
from engine.store.store import Store
from mappings.environment import make_environment
from ris_core import hl7in
from ris_core.config import CompiledRis, RisConfig, compile_ris
from ris_core.service import thd_hl7
from tests.engine import conftest as engine_fixtures

# The engine's fixtures: a Clock and stores on SQLite (and PostgreSQL for ``any_store``).
clock, sqlite_store, any_store = engine_fixtures.clock, engine_fixtures.sqlite_store, engine_fixtures.any_store
store_url, pg_url = engine_fixtures.store_url, engine_fixtures.pg_url

NOW = 1_709_650_000.0  # 2024-03-05


def make_rt(**config: Any) -> CompiledRis:
    """A RIS config with *config* and the stock templates compiled."""
    return compile_ris(RisConfig(**config), make_environment([]))


@pytest.fixture
def rt() -> CompiledRis:
    """The RIS with its defaults (status, report and charge channels configured)."""
    return make_rt(status_channel="to-his", report_channel="to-ehr", charge_channel="billing",
                   station_aes={"CT": ["CT1", "CT2"]})  # fmt: skip


def apply(store: Store, rt: CompiledRis, text: str, message_id: int | None = None, now: float = NOW) -> Any:
    """Apply one HL7 message in its own transaction; (changes, planned outputs). Raises Rejected."""
    parsed = hl7in.parse(HL7Message(text), rt.config.defaults.issuer_of_patient_id)
    return store.transact_sync(thd_hl7, rt, parsed, message_id=message_id, now=now)


def one(store: Store, query: Any) -> Any:
    """The single row *query* selects."""
    with store.engine.connect() as conn:
        return conn.execute(query).one()


def rows(store: Store, query: Any) -> list[Any]:
    """The rows *query* selects."""
    with store.engine.connect() as conn:
        return conn.execute(query).all()


def settle(d: Any, store: Store, clock: Any, rounds: int = 20) -> Any:
    """Let the writer commit (and the reactor run) until *d* has fired; its result."""
    from tests.engine.conftest import flush, has_result, result_of

    for _ in range(rounds):
        if has_result(d):
            break
        flush(store, clock)
    return result_of(d)


def ris_with_outputs(store: Store, clock: Any, tmp_path: Any, *, channels: tuple[str, ...] = ("to-his", "to-ehr",
                     "billing"), metrics: Any = None, **config: Any) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """A RisService on *store* whose output channels feed memory destinations; (service, channel → destination)."""
    from channels.memory import MemoryDestination, MemoryDestinationConfig
    from engine.components import BuildContext
    from ris_core.service import RisService
    from tests.engine.test_service import make_service

    services: dict[str, Any] = {}
    received: dict[str, Any] = {}
    for name in channels:
        ctx = BuildContext(reactor=clock, channel=name, component="out", config_dir=tmp_path, data_dir=tmp_path)
        received[name] = MemoryDestination(MemoryDestinationConfig(), ctx)
        services[name] = make_service(store, clock, received[name], name=name, flt=None, metrics=metrics)
    config = {"status_channel": "to-his", "report_channel": "to-ehr", "charge_channel": "billing",
              "station_aes": {"CT": ["CT1"]}, **config}  # fmt: skip
    ctx = BuildContext(reactor=clock, channel="", component="ris", config_dir=tmp_path, data_dir=tmp_path,
                       metrics=metrics, store=store, services=services, jinja_env=make_environment([]))  # fmt: skip
    service = RisService(RisConfig(**config), ctx)
    service.now = lambda: NOW
    service.start()
    return service, received
