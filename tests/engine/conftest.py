"""Shared fixtures for engine tests: a Clock, stores on SQLite (and PostgreSQL), message helpers."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.store.store import Store

PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

ORM = (
    "MSH|^~\\&|RIS|HOSP|PACS|RAD|20240305143000||ORM^O01|{cid}|P|2.3.1\r"
    "PID|1||{pid}^^^HOSP||DOE^JOHN\r"
    "ORC|NW|A1\r"
    "OBR|1|A1||CT^CT HEAD||||||||||||||{acc}"
)


def orm(cid: str = "C1", pid: str = "P1", acc: str = "ACC1", app: str = "RIS", facility: str = "HOSP") -> str:
    """An ORM^O01 with the given MSH-10, PID-3, OBR-18 and sender."""
    text = ORM.format(cid=cid, pid=pid, acc=acc)
    return text.replace("|RIS|HOSP|", f"|{app}|{facility}|", 1)


def message_values(**overrides: Any) -> dict[str, Any]:
    """A full row for Writer.store_message (every hot-path column), with *overrides*."""
    values: dict[str, Any] = {
        "channel": "ch",
        "received_at": time.time(),
        "status": "TRANSFORMED",
        "control_id": "C1",
        "sending_app": "RIS",
        "sending_facility": "HOSP",
        "message_type": "ORM^O01",
        "patient_id": "P1",
        "accession": "ACC1",
        "charset": "utf-8",
        "origin": "test",
        "raw": b"MSH|^~\\&|RIS|HOSP",
        "transformed": None,
        "filter_info": None,
        "error": None,
        "duplicate_of": None,
        "parent_id": None,
    }
    values.update(overrides)
    return values


def result_of(d: defer.Deferred) -> Any:
    """The result a fired Deferred holds (a Failure when it failed); fails the test if it has none."""
    assert has_result(d), "Deferred has not fired"
    results: list[Any] = []
    d.addBoth(results.append)
    return results[0]


def has_result(d: defer.Deferred) -> bool:
    """True when *d* has a result (not merely waiting on another Deferred), without consuming it."""
    return d.called and not isinstance(d.result, defer.Deferred)


def flush(store: Store, clock: Clock) -> None:
    """Commit every write the store's writer holds, lazy ones (batched "sent" updates) included."""
    store.writer.drain()
    clock.advance(0)


@pytest.fixture
def clock() -> Clock:
    """A fake reactor clock."""
    return Clock()


def _stop_store(store: Store, clock: Clock) -> None:
    d = store.stop()
    clock.advance(0)
    d.addErrback(lambda _: None)


@pytest.fixture
def sqlite_store(tmp_path: Any, clock: Clock) -> Iterator[Store]:
    """A started Store on a temp-file SQLite, its writer inline on *clock*."""
    store = Store(f"sqlite:///{tmp_path}/t.db", clock, writer_mode="inline")
    store.start()
    yield store
    _stop_store(store, clock)


def postgres_url() -> str:
    """The PostgreSQL server tests use."""
    return os.environ.get("RADBRIDGE_TEST_DATABASE_URL", PG_DEFAULT_URL)


def _pg_admin_connect() -> Any:
    """A psycopg autocommit connection to the test server, or skip/fail when it is unreachable."""
    skip = os.environ.get("RADBRIDGE_SKIP_POSTGRES") == "1"
    if skip:
        pytest.skip("RADBRIDGE_SKIP_POSTGRES=1: PostgreSQL tests disabled")
    url = postgres_url()
    try:
        import psycopg

        return psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=5
        )
    except Exception as exc:  # noqa: BLE001 - reported as a test failure
        pytest.fail(
            f"PostgreSQL at {url} is unreachable ({type(exc).__name__}: {exc}); "
            "start it, point RADBRIDGE_TEST_DATABASE_URL at one, or set RADBRIDGE_SKIP_POSTGRES=1",
            pytrace=False,
        )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    admin = _pg_admin_connect()
    schema = f"rb_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    base = postgres_url()
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A database URL: a temp-file SQLite, or a fresh schema on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def any_store(store_url: str, clock: Clock) -> Iterator[Store]:
    """A started Store on *store_url* with an inline writer on *clock*."""
    store = Store(store_url, clock, writer_mode="inline")
    store.start()
    yield store
    _stop_store(store, clock)
