"""Users, API tokens and console sessions: ``thd_*`` functions over the admin tables, argon2 password hashes.

Tokens and session ids are random 256-bit strings shown once; the store keeps only their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, select, update

from engine.admin.schema import ADMIN, ROLES, admin_sessions, admin_tokens, admin_users

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 10
BOOTSTRAP_USER, BOOTSTRAP_PASSWORD = "RADBRIDGE_ADMIN_USER", "RADBRIDGE_ADMIN_PASSWORD"
TOKEN_PREFIX = "rbt_"


class UserError(ValueError):
    """A user operation that cannot be done (unknown user, bad name, weak password, ...)."""


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    """The argon2id hasher (library defaults: RFC 9106 low-memory profile)."""
    return PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of *password* (at least :data:`MIN_PASSWORD` characters)."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    return hasher().hash(password)


def digest(secret: str) -> str:
    """SHA-256 hex of a token or session id (what the store keeps)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _public(row: Any) -> dict[str, Any]:
    return {"id": row.id, "username": row.username, "role": row.role, "disabled": bool(row.disabled),
            "created_at": row.created_at, "updated_at": row.updated_at}  # fmt: skip


def thd_add_user(conn: Connection, username: str, password: str, role: str, now: float) -> dict[str, Any]:
    """Create a user; :class:`UserError` when the name is taken or invalid, the role unknown or the password short."""
    if not USERNAME_RE.match(username):
        raise UserError("a username is 1-64 letters, digits and _.@- (starting with a letter or digit)")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if conn.execute(select(admin_users.c.id).where(admin_users.c.username == username)).first():
        raise UserError(f"user {username!r} exists")
    values = {"username": username, "password_hash": hash_password(password), "role": role, "disabled": 0}
    conn.execute(admin_users.insert().values(**values, created_at=now, updated_at=now))
    return thd_get_user(conn, username)


def thd_get_user(conn: Connection, username: str) -> dict[str, Any] | None:
    """One user without the hash (``None`` when unknown)."""
    row = conn.execute(select(admin_users).where(admin_users.c.username == username)).first()
    return _public(row) if row else None


def thd_list_users(conn: Connection) -> list[dict[str, Any]]:
    """Every user, by name (no hashes)."""
    return [_public(r) for r in conn.execute(select(admin_users).order_by(admin_users.c.username))]


def _change(conn: Connection, username: str, now: float, **values: Any) -> dict[str, Any]:
    res = conn.execute(update(admin_users).where(admin_users.c.username == username).values(**values, updated_at=now))
    if not res.rowcount:
        raise UserError(f"no user {username!r}")
    return thd_get_user(conn, username)


def thd_set_password(conn: Connection, username: str, password: str, now: float) -> dict[str, Any]:
    """Replace a user's password and end their console sessions."""
    user = _change(conn, username, now, password_hash=hash_password(password))
    conn.execute(delete(admin_sessions).where(admin_sessions.c.user_ref == user["id"]))
    return user


def thd_set_disabled(conn: Connection, username: str, disabled: bool, now: float) -> dict[str, Any]:
    """Disable (or enable) a user; a disabled user's tokens and sessions stop working at once."""
    user = _change(conn, username, now, disabled=int(disabled))
    if disabled:
        conn.execute(delete(admin_sessions).where(admin_sessions.c.user_ref == user["id"]))
    return user


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hasher().hash(secrets.token_hex(16))


def thd_password_hash(conn: Connection, username: str) -> tuple[dict[str, Any] | None, str]:
    """(user, argon2 hash) of an enabled user; (None, a dummy hash) otherwise so that timing tells nothing."""
    row = conn.execute(select(admin_users).where(admin_users.c.username == username)).first()
    if row is None or row.disabled:
        return None, _dummy_hash()
    return _public(row), row.password_hash


def check_password(stored_hash: str, password: str) -> bool:
    """Whether *password* matches the argon2 hash (CPU-heavy: run it off the reactor)."""
    try:
        return hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def thd_add_token(conn: Connection, username: str, name: str, now: float, ttl: float | None = None) -> str:
    """A new API token for *username* (returned once; only its hash is stored)."""
    user = thd_get_user(conn, username)
    if user is None:
        raise UserError(f"no user {username!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = now + ttl if ttl else None
    conn.execute(admin_tokens.insert().values(user_ref=user["id"], name=name[:64], token_hash=digest(token),
                                              created_at=now, expires_at=expires))  # fmt: skip
    return token


def _enabled_user(conn: Connection, user_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(admin_users).where(admin_users.c.id == user_id)).first()
    return _public(row) if row is not None and not row.disabled else None


def thd_token_user(conn: Connection, token: str, now: float) -> dict[str, Any] | None:
    """The enabled user a bearer token belongs to (``None``: unknown, expired or disabled)."""
    t = admin_tokens.c
    row = conn.execute(select(t.user_ref, t.expires_at).where(t.token_hash == digest(token))).first()
    if row is None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return _enabled_user(conn, row.user_ref)


def thd_new_session(conn: Connection, user_id: int, remote: str, now: float, timeout: float) -> tuple[str, str]:
    """(session id, CSRF token) of a new console session."""
    session, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute(admin_sessions.insert().values(user_ref=user_id, session_hash=digest(session), csrf_hash=digest(csrf),
                                                remote=remote[:64], created_at=now, expires_at=now + timeout))  # fmt: skip
    return session, csrf


def thd_session_user(conn: Connection, session: str, now: float) -> tuple[dict[str, Any], str] | None:
    """(enabled user, CSRF token hash) of a live session (``None``: unknown, expired or disabled)."""
    s = admin_sessions.c
    row = conn.execute(select(s.user_ref, s.csrf_hash, s.expires_at).where(s.session_hash == digest(session))).first()
    if row is None or row.expires_at <= now:
        return None
    user = _enabled_user(conn, row.user_ref)
    return (user, row.csrf_hash) if user else None


def thd_end_session(conn: Connection, session: str) -> int:
    """Delete a session (logout); how many rows went."""
    return conn.execute(delete(admin_sessions).where(admin_sessions.c.session_hash == digest(session))).rowcount


def thd_bootstrap(conn: Connection, environ: Any, now: float) -> str | None:
    """Create the admin named by RADBRIDGE_ADMIN_USER/RADBRIDGE_ADMIN_PASSWORD if missing; the name if created.

    An existing user of that name is left as it is (its password is not reset from the environment).
    """
    environ = os.environ if environ is None else environ
    username, password = environ.get(BOOTSTRAP_USER), environ.get(BOOTSTRAP_PASSWORD)
    if not username or not password or thd_get_user(conn, username) is not None:
        return None
    thd_add_user(conn, username, password, ADMIN, now)
    return username


def thd_has_users(conn: Connection) -> bool:
    """Whether any enabled user exists."""
    return conn.execute(select(admin_users.c.id).where(admin_users.c.disabled == 0).limit(1)).first() is not None
