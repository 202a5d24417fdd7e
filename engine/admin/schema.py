"""Tables of the admin API: users, API tokens, console sessions and the audit trail (0006_admin mirrors them).

Only hashes of tokens and session ids are stored (SHA-256: they are random, 256-bit); passwords are argon2
hashes. Audit rows are only ever inserted: no code path updates or deletes them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from engine.store.schema import IdType, metadata

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)  # each role may do what the ones before it may

admin_users = Table(
    "admin_users",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("user_ref", BigInteger, ForeignKey("admin_users.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
)

admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("user_ref", BigInteger, ForeignKey("admin_users.id"), nullable=False),
    Column("session_hash", String(64), nullable=False, unique=True),
    Column("csrf_hash", String(64), nullable=False),
    Column("remote", String(64)),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

admin_audit = Table(
    "admin_audit",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("username", String(64)),
    Column("role", String(16)),
    Column("action", String(64), nullable=False),
    Column("target", String(255)),
    Column("outcome", String(16), nullable=False),
    Column("remote", String(64)),
    Column("detail", Text),
    Index("ix_admin_audit_at", "at"),
    Index("ix_admin_audit_user", "username", "at"),
    Index("ix_admin_audit_action", "action", "at"),
)
