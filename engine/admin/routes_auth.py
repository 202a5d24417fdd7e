"""Login and logout, the caller, users (admin), the audit trail (admin, read only) and the config (admin)."""

from __future__ import annotations

import re
from typing import Any

from engine.admin.audit import FAILURE, thd_audit_list
from engine.admin.auth import SESSION_COOKIE
from engine.admin.http import ApiError, int_arg, iso, when_arg
from engine.admin.schema import ADMIN, VIEWER
from engine.admin.server import Call, Route
from engine.admin.users import (
    UserError,
    check_password,
    thd_add_user,
    thd_end_session,
    thd_list_users,
    thd_new_session,
    thd_password_hash,
    thd_set_disabled,
    thd_set_password,
)

_URL_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def _strings(body: dict[str, Any], *names: str) -> list[str]:
    values = [body.get(n) for n in names]
    missing = [n for n, v in zip(names, values) if not isinstance(v, str) or not v]
    if missing:
        raise ApiError(400, f"{', '.join(missing)}: required (a non-empty string)")
    return values  # type: ignore[return-value]


async def login(call: Call) -> dict[str, Any]:
    """POST /api/login: check the password, open a session cookie, answer the CSRF token."""
    username, password = _strings(call.body(), "username", "password")
    api, name = call.api, username[:64]
    wait = api.throttle.retry_after(name, call.remote, api.now())
    if wait > 0:
        await call.audit("login.failure", target=f"user/{name}", outcome=FAILURE, username=name,
                         detail={"throttled": True})  # fmt: skip
        raise ApiError(429, f"too many failed logins; try again in {int(wait) + 1} s")
    user, stored = await api.store.read(thd_password_hash, name)
    ok = await api.blocking(check_password, stored, password)
    if user is None or not ok:
        api.throttle.failed(name, call.remote, api.now())
        await call.audit("login.failure", target=f"user/{name}", outcome=FAILURE, username=name)
        raise ApiError(401, "wrong username or password")
    api.throttle.succeeded(name)
    timeout = api.config.session_timeout
    session, csrf = await api.store.transact(thd_new_session, user["id"], call.remote, api.now(), timeout)
    call.request.addCookie(SESSION_COOKIE, session.encode(), path="/", httpOnly=True, sameSite="strict",
                           secure=api.config.cookie_secure or None, max_age=str(int(timeout)))  # fmt: skip
    call.user = user
    await call.audit("login.success", target=f"user/{username}", detail={"method": "password"})
    return {"username": user["username"], "role": user["role"], "csrf_token": csrf}


async def logout(call: Call) -> dict[str, Any]:
    """POST /api/logout: end the cookie session (a token stays valid)."""
    cookie = call.request.getCookie(SESSION_COOKIE)
    if call.via == "cookie" and cookie:
        await call.api.store.transact(thd_end_session, cookie.decode("ascii", "replace"))
        call.request.addCookie(SESSION_COOKIE, b"", path="/", httpOnly=True, sameSite="strict", max_age="0")
    await call.audit("logout", target=f"user/{call.user['username']}")
    return {"ok": True}


async def me(call: Call) -> dict[str, Any]:
    """GET /api/me: who the credentials belong to."""
    return {"username": call.user["username"], "role": call.user["role"], "via": call.via}


def _user_json(u: dict[str, Any]) -> dict[str, Any]:
    return {**u, "created_at": iso(u["created_at"]), "updated_at": iso(u["updated_at"])}


async def list_users(call: Call) -> list[dict[str, Any]]:
    """GET /api/users."""
    return [_user_json(u) for u in await call.api.store.read(thd_list_users)]


async def add_user(call: Call) -> dict[str, Any]:
    """POST /api/users {username, password, role}."""
    username, password, role = _strings(call.body(), "username", "password", "role")
    try:
        user = await call.api.store.transact(thd_add_user, username, password, role, call.api.now())
    except UserError as exc:
        raise ApiError(409 if "exists" in str(exc) else 400, str(exc)) from None
    await call.audit("user.add", target=f"user/{username}", detail={"role": role})
    call.status = 201
    return _user_json(user)


async def _change(call: Call, action: str, fn: Any, *args: Any) -> dict[str, Any]:
    name = call.params["username"]
    try:
        user = await call.api.store.transact(fn, name, *args, call.api.now())
    except UserError as exc:
        raise ApiError(404 if str(exc).startswith("no user") else 400, str(exc)) from None
    await call.audit(action, target=f"user/{name}")
    return _user_json(user)


async def disable_user(call: Call) -> dict[str, Any]:
    """POST /api/users/{username}/disable: its tokens and sessions stop working."""
    return await _change(call, "user.disable", thd_set_disabled, True)


async def enable_user(call: Call) -> dict[str, Any]:
    """POST /api/users/{username}/enable."""
    return await _change(call, "user.enable", thd_set_disabled, False)


async def set_password(call: Call) -> dict[str, Any]:
    """POST /api/users/{username}/password {password}."""
    (password,) = _strings(call.body(), "password")
    return await _change(call, "user.password", thd_set_password, password)


async def audit_list(call: Call) -> list[dict[str, Any]]:
    """GET /api/audit?user=&action=&since=&until=&limit=: the trail, newest first (nothing edits or deletes it)."""
    a = call.args
    rows = await call.api.store.read(
        thd_audit_list, user=a.get("user"), action=a.get("action"), since=when_arg(a, "since"),
        until=when_arg(a, "until"), limit=int_arg(a, "limit", 200, hi=5000),
    )  # fmt: skip
    await call.audit("audit.view", detail={k: v for k, v in a.items() if k != "limit"} or None)
    return [{**r, "at": iso(r["at"])} for r in rows]


async def config(call: Call) -> dict[str, Any]:
    """GET /api/config: the running root config (passwords in database URLs masked)."""
    root = call.api.app.vc.root.model_dump(mode="json")
    if root.get("database"):
        root["database"] = _URL_PASSWORD.sub(r"\1***@", root["database"])
    return root


def routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("POST", "/api/login", login, None),
        Route("POST", "/api/logout", logout, VIEWER),
        Route("GET", "/api/me", me, VIEWER),
        Route("GET", "/api/users", list_users, ADMIN),
        Route("POST", "/api/users", add_user, ADMIN),
        Route("POST", "/api/users/{username}/disable", disable_user, ADMIN),
        Route("POST", "/api/users/{username}/enable", enable_user, ADMIN),
        Route("POST", "/api/users/{username}/password", set_password, ADMIN),
        Route("GET", "/api/audit", audit_list, ADMIN),
        Route("GET", "/api/config", config, ADMIN),
    ]
