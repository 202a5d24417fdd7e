"""Initial message store: messages and per-destination deliveries (the durable queues).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the tables and indexes."""
    op.create_table(
        "messages",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("control_id", sa.String(64)),
        sa.Column("sending_app", sa.String(180)),
        sa.Column("sending_facility", sa.String(180)),
        sa.Column("message_type", sa.String(32)),
        sa.Column("patient_id", sa.String(64)),
        sa.Column("accession", sa.String(64)),
        sa.Column("charset", sa.String(32)),
        sa.Column("origin", sa.String(255)),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("transformed", sa.Text),
        sa.Column("filter_info", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("duplicate_of", sa.BigInteger),
        sa.Column("parent_id", sa.BigInteger),
    )
    op.create_index("ix_messages_channel_time", "messages", ["channel", "received_at"])
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index("ix_messages_control", "messages", ["control_id"])
    for column in ("patient_id", "accession"):
        where = sa.text(f"{column} IS NOT NULL")
        name = "ix_messages_patient" if column == "patient_id" else "ix_messages_accession"
        op.create_index(name, "messages", [column], sqlite_where=where, postgresql_where=where)
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("response", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float),
        sa.Column("sent_at", sa.Float),
    )
    op.create_index("ix_deliveries_queue", "deliveries", ["channel", "destination", "status", "id"])
    op.create_index("ix_deliveries_message", "deliveries", ["message_id"])


def downgrade() -> None:
    """Drop everything."""
    op.drop_table("deliveries")
    op.drop_table("messages")
