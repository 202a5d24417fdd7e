"""The admin API: users, API tokens (hashes), console sessions (hashes) and the append-only audit trail.

Mirrors ``engine/admin/schema.py``.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the admin tables."""
    op.create_table(
        "admin_users",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "admin_tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_ref", sa.BigInteger, sa.ForeignKey("admin_users.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_ref", sa.BigInteger, sa.ForeignKey("admin_users.id"), nullable=False),
        sa.Column("session_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("csrf_hash", sa.String(64), nullable=False),
        sa.Column("remote", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_table(
        "admin_audit",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("username", sa.String(64)),
        sa.Column("role", sa.String(16)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("remote", sa.String(64)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_admin_audit_at", "admin_audit", ["at"])
    op.create_index("ix_admin_audit_user", "admin_audit", ["username", "at"])
    op.create_index("ix_admin_audit_action", "admin_audit", ["action", "at"])


def downgrade() -> None:
    """Drop the admin tables."""
    for name in ("ix_admin_audit_action", "ix_admin_audit_user", "ix_admin_audit_at"):
        op.drop_index(name, table_name="admin_audit")
    for table in ("admin_audit", "admin_sessions", "admin_tokens", "admin_users"):
        op.drop_table(table)
