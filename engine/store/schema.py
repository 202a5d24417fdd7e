"""Tables of the message store (SQLAlchemy Core; Alembic migrations mirror them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text, text

metadata = MetaData()

# SQLite only aliases the rowid for INTEGER PRIMARY KEY.
IdType = BigInteger().with_variant(Integer(), "sqlite")

# Source statuses (messages.status) and destination statuses (deliveries.status).
RECEIVED, FILTERED, TRANSFORMED, QUEUED, SENT, ERROR = "RECEIVED", "FILTERED", "TRANSFORMED", "QUEUED", "SENT", "ERROR"
STATUSES = (RECEIVED, FILTERED, TRANSFORMED, QUEUED, SENT, ERROR)

messages = Table(
    "messages",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("control_id", String(64)),
    Column("sending_app", String(180)),
    Column("sending_facility", String(180)),
    Column("message_type", String(32)),
    Column("patient_id", String(64)),
    Column("accession", String(64)),
    Column("charset", String(32)),
    Column("origin", String(255)),
    Column("raw", LargeBinary, nullable=False),
    Column("transformed", Text),
    Column("filter_info", Text),
    Column("error", Text),
    Column("duplicate_of", BigInteger),
    Column("parent_id", BigInteger),
    # Time ranges across channels use this index too (queries.channel_names: a loose index scan).
    Index("ix_messages_channel_time", "channel", "received_at"),
    Index("ix_messages_control", "control_id"),
    # Partial: most messages of a type lack one of them, and NULLs need no index entry.
    Index(
        "ix_messages_patient",
        "patient_id",
        sqlite_where=text("patient_id IS NOT NULL"),
        postgresql_where=text("patient_id IS NOT NULL"),
    ),
    Index(
        "ix_messages_accession",
        "accession",
        sqlite_where=text("accession IS NOT NULL"),
        postgresql_where=text("accession IS NOT NULL"),
    ),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("message_id", BigInteger, nullable=False),
    Column("channel", String(64), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("content", Text),  # NULL: the same text as messages.transformed
    Column("response", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float),
    Column("sent_at", Float),
    # Only QUEUED rows: a delivery leaves the index when it is SENT (queries must say status = 'QUEUED'
    # literally, see queries.QUEUED_ONLY, or the planner cannot use a partial index).
    Index(
        "ix_deliveries_queued",
        "channel",
        "destination",
        "id",
        sqlite_where=text("status = 'QUEUED'"),
        postgresql_where=text("status = 'QUEUED'"),
    ),
    Index("ix_deliveries_message", "message_id"),
)
