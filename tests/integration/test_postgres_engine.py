"""The same engine on PostgreSQL: messages stored there, delivered, and resumed after kill -9."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from tests.integration.helpers import first_arrivals, free_port, make_orm, write_config

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

BASE_URL = os.environ.get("RADBRIDGE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_schema():
    """A fresh schema on the test server (fails, not skips, when the server is unreachable)."""
    if os.environ.get("RADBRIDGE_SKIP_POSTGRES") == "1":
        pytest.skip("RADBRIDGE_SKIP_POSTGRES=1")
    name = f"rb_it_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(BASE_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    try:
        yield name, engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {name} CASCADE"))
        engine.dispose()


def test_engine_on_postgresql_delivers_and_resumes(tmp_path, pg_schema, downstream, engine_factory):
    """Messages ACKed by an engine on PostgreSQL are in PostgreSQL and all reach the downstream, across a kill -9."""
    import hl7.client

    schema, pg = pg_schema
    port = free_port()
    config = write_config(
        tmp_path / "pg.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "database": f"{BASE_URL}?options=-csearch_path%3D{schema}",
            "metrics": {"enabled": False},
            "channels": [
                {
                    "name": "pg-in",
                    "source": {"type": "mllp_listener", "port": port},
                    "destinations": [
                        {
                            "name": "down",
                            "type": "mllp_sender",
                            "host": "127.0.0.1",
                            "port": downstream.port,
                            "retry": {"initial_delay": 0.1, "max_delay": 0.5},
                        }
                    ],
                }
            ],
        },
    )
    engine = engine_factory(config).start_ready()
    ids = [f"PG{i:04d}" for i in range(60)]
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        for cid in ids[:30]:
            assert b"MSA|AA|" + cid.encode() in client.send_message(make_orm(cid, f"P{cid}", f"A{cid}"))
    downstream.stop()  # queue the rest while the downstream is down
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        for cid in ids[30:]:
            assert b"MSA|AA|" + cid.encode() in client.send_message(make_orm(cid, f"P{cid}", f"A{cid}"))
    engine.kill9()
    with pg.connect() as conn:
        stored = conn.execute(sa.text(f"SELECT control_id FROM {schema}.messages ORDER BY id")).scalars().all()
    assert stored == ids
    downstream.start()
    engine.start_ready()
    received = downstream.wait_for(ids, timeout=60)
    assert first_arrivals(received) == ids
    assert engine.terminate() == 0
    with pg.connect() as conn:
        statuses = conn.execute(sa.text(f"SELECT DISTINCT status FROM {schema}.deliveries")).scalars().all()
    assert statuses == ["SENT"]
