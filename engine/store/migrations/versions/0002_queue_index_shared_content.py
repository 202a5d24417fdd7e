"""Partial queue index (QUEUED rows only) and delivery content shared with the message.

A delivery's ``content`` is NULL when it equals the message's ``transformed`` text (the
queue reads it from there), so the outbound text is stored once. The queue index holds
only QUEUED rows: marking a delivery SENT removes its entry instead of moving it, and the
index stays as small as the queues.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

QUEUED_ONLY = sa.text("status = 'QUEUED'")


def upgrade() -> None:
    """Make content nullable; replace the queue index with a partial one."""
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("content", existing_type=sa.Text, nullable=True)
    op.drop_index("ix_deliveries_queue", table_name="deliveries")
    op.create_index(
        "ix_deliveries_queued",
        "deliveries",
        ["channel", "destination", "id"],
        sqlite_where=QUEUED_ONLY,
        postgresql_where=QUEUED_ONLY,
    )


def downgrade() -> None:
    """Back to revision 0001 (shared content is copied back into each delivery)."""
    op.drop_index("ix_deliveries_queued", table_name="deliveries")
    op.create_index("ix_deliveries_queue", "deliveries", ["channel", "destination", "status", "id"])
    op.execute(
        "UPDATE deliveries SET content = (SELECT transformed FROM messages WHERE messages.id = deliveries.message_id)"
        " WHERE content IS NULL"
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("content", existing_type=sa.Text, nullable=False)
