"""Who is calling: bearer tokens for the API, session cookies (with a CSRF token) for the console, roles."""

from __future__ import annotations

from typing import Any

from engine.admin.http import ApiError
from engine.admin.schema import ROLES
from engine.admin.users import digest, same, thd_session_user, thd_token_user

SESSION_COOKIE = b"radbridge_session"
CSRF_HEADER = "x-csrf-token"
CHALLENGE = {b"WWW-Authenticate": b'Bearer realm="radbridge"'}


def unauthorized(message: str) -> ApiError:
    """A 401 with the bearer challenge."""
    return ApiError(401, message, dict(CHALLENGE))


async def authenticate(call: Any) -> None:
    """Set ``call.user`` from ``Authorization: Bearer`` or the session cookie; 401 when neither is valid."""
    api, request = call.api, call.request
    header = request.getHeader("authorization")
    if header:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("use Authorization: Bearer <token>")
        user = await api.store.read(thd_token_user, token.strip(), api.now())
        if user is None:
            await call.audit("login.failure", detail={"method": "token"})
            raise unauthorized("unknown, expired or disabled token")
        call.user, call.via = user, "token"
        return
    cookie = request.getCookie(SESSION_COOKIE)
    if cookie:
        found = await api.store.read(thd_session_user, cookie.decode("ascii", "replace"), api.now())
        if found is None:
            raise unauthorized("session expired or ended; log in again")
        call.user, call.csrf_hash = found
        call.via = "cookie"
        return
    raise unauthorized("authentication required")


def check_csrf(call: Any) -> None:
    """A cookie-authenticated change must carry the session's CSRF token in X-CSRF-Token; 403 otherwise."""
    sent = call.request.getHeader(CSRF_HEADER)
    if not sent or call.csrf_hash is None or not same(digest(sent), call.csrf_hash):
        raise ApiError(403, "CSRF token missing or wrong: send the login answer's csrf_token as X-CSRF-Token")


def require_role(call: Any, role: str) -> None:
    """403 unless the caller's role is *role* or above."""
    if ROLES.index(call.user["role"]) < ROLES.index(role):
        raise ApiError(403, f"needs the {role} role")
