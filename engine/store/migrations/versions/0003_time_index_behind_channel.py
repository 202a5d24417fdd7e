"""Drop the separate received_at index: time is indexed behind the channel.

``ix_messages_channel_time`` (channel, received_at) serves time ranges for one channel, and
for every channel through ``queries.channel_names()`` (a loose index scan). One index fewer
on the insert path is one B-tree page fewer written per message.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop ix_messages_received_at."""
    op.drop_index("ix_messages_received_at", table_name="messages")


def downgrade() -> None:
    """Recreate ix_messages_received_at."""
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
