"""Login sessions, CSRF, tokens, users, and the bootstrap admin from the environment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.admin.users import (
    UserError,
    check_password,
    digest,
    thd_add_token,
    thd_add_user,
    thd_bootstrap,
    thd_has_users,
    thd_password_hash,
    thd_token_user,
)
from engine.store.store import Store
from tests.admin.conftest import PASSWORD, audit_rows, make_env


def login(client, user: str = "operator", password: str = PASSWORD):
    """POST /api/login."""
    return client.post("/api/login", {"username": user, "password": password})


def test_login_sets_a_strict_httponly_cookie_and_answers_a_csrf_token(env) -> None:
    """A right password opens a session: HttpOnly, SameSite=Strict cookie; the answer carries the CSRF token."""
    resp = login(env.client)
    assert resp.status == 200
    body = resp.json()
    assert body["role"] == "operator" and len(body["csrf_token"]) > 30
    cookie = resp.header("set-cookie")
    assert cookie.startswith("radbridge_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert env.client.get("/api/me").json() == {"username": "operator", "role": "operator", "via": "cookie"}


def test_wrong_password_is_401_and_audited(env) -> None:
    """A wrong password or an unknown user gets 401, no cookie, and a login.failure record each."""
    assert login(env.client, password="wrong password!").status == 401
    assert login(env.client, user="nobody").status == 401
    assert not env.client.cookies
    failures = audit_rows(env, action="login.failure")
    assert [r["target"] for r in failures] == ["user/nobody", "user/operator"]
    assert all(r["outcome"] == "failure" and r["remote"] == "127.0.0.1" for r in failures)


def test_cookie_change_needs_the_csrf_header(env) -> None:
    """With a session cookie a POST without X-CSRF-Token (or with a wrong one) is 403; with it the action runs."""
    csrf = login(env.client).json()["csrf_token"]
    assert env.client.post("/api/channels/his/pause").status == 403
    assert env.client.post("/api/channels/his/pause", headers={"X-CSRF-Token": "x" * 43}).status == 403
    assert env.app.services["his"].paused is False
    resp = env.client.post("/api/channels/his/pause", headers={"X-CSRF-Token": csrf})
    assert resp.status == 200 and resp.json()["state"] == "paused"


def test_cookie_form_post_is_refused_for_csrf(env) -> None:
    """A cross-site style form post (urlencoded, cookie, no token) is refused 403 before anything runs."""
    login(env.client)
    resp = env.client.request("POST", "/api/messages/1/reprocess", body=b"channel=his",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert resp.status == 403 and "CSRF" in resp.json()["error"]


def test_token_needs_no_csrf(env) -> None:
    """A bearer token is not sent by browsers on their own, so its POSTs need no CSRF header."""
    resp = env.client.post("/api/channels/his/pause", token=env.tokens["operator"])
    assert resp.status == 200


def test_logout_ends_the_session(env) -> None:
    """After logout the same cookie is 401."""
    client = env.client
    csrf = login(client).json()["csrf_token"]
    cookie = dict(client.cookies)
    assert client.post("/api/logout", headers={"X-CSRF-Token": csrf}).status == 200
    client.cookies = cookie
    assert client.get("/api/me").status == 401


def test_expired_session_is_401(env) -> None:
    """A session past session_timeout is refused."""
    login(env.client)
    env.api.now = lambda: time.time() + env.api.config.session_timeout + 1
    assert env.client.get("/api/me").status == 401


def test_expired_token_is_refused(sqlite_store: Store) -> None:
    """A token with a ttl stops working after it; only its hash is in the store."""
    sqlite_store.transact_sync(thd_add_user, "ann", PASSWORD, "viewer", 0.0)
    token = sqlite_store.transact_sync(thd_add_token, "ann", "t", 100.0, 60.0)
    assert sqlite_store.read_sync(thd_token_user, token, 150.0)["username"] == "ann"
    assert sqlite_store.read_sync(thd_token_user, token, 161.0) is None
    with sqlite_store.engine.connect() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT token_hash FROM admin_tokens")]
    assert stored == [digest(token)] and token not in stored


def test_passwords_are_argon2_hashes(sqlite_store: Store) -> None:
    """The stored hash is argon2id, verifies the password, and refuses another."""
    sqlite_store.transact_sync(thd_add_user, "ann", PASSWORD, "viewer", 0.0)
    user, stored = sqlite_store.read_sync(thd_password_hash, "ann")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert check_password(stored, PASSWORD) and not check_password(stored, PASSWORD + "x")


@pytest.mark.parametrize(
    ("name", "password", "role", "message"),
    [("bad name", PASSWORD, "viewer", "username"), ("ann", "short", "viewer", "at least"),
     ("ann", PASSWORD, "root", "unknown role")],
)  # fmt: skip
def test_invalid_users_are_refused(sqlite_store: Store, name: str, password: str, role: str, message: str) -> None:
    """Bad names, short passwords and unknown roles raise UserError."""
    with pytest.raises(UserError, match=message):
        sqlite_store.transact_sync(thd_add_user, name, password, role, 0.0)


def test_bootstrap_admin_from_the_environment(sqlite_store: Store) -> None:
    """RADBRIDGE_ADMIN_USER/PASSWORD create an admin once; without them nobody exists (no default password)."""
    assert sqlite_store.transact_sync(thd_bootstrap, {}, 0.0) is None
    assert not sqlite_store.read_sync(thd_has_users)
    environ = {"RADBRIDGE_ADMIN_USER": "root", "RADBRIDGE_ADMIN_PASSWORD": PASSWORD}
    assert sqlite_store.transact_sync(thd_bootstrap, environ, 0.0) == "root"
    assert (
        sqlite_store.transact_sync(thd_bootstrap, {**environ, "RADBRIDGE_ADMIN_PASSWORD": "other pass 1"}, 1.0) is None
    )
    user, stored = sqlite_store.read_sync(thd_password_hash, "root")
    assert user["role"] == "admin" and check_password(stored, PASSWORD)


def test_admin_api_start_bootstraps_and_logs_in(tmp_path: Path) -> None:
    """AdminApi.start with the variables set creates the admin, who can then log in."""
    environ = {"RADBRIDGE_ADMIN_USER": "boot", "RADBRIDGE_ADMIN_PASSWORD": PASSWORD}
    for env in make_env(tmp_path, environ=environ):
        env.api.reactor = _NoListen(env.api.reactor)
        d = env.api.start()
        env.clock.advance(0)
        assert d.called
        assert login(env.client, "boot").json()["role"] == "admin"


class _NoListen:
    """The test Clock plus a listenTCP that records instead of binding."""

    def __init__(self, clock) -> None:
        self.clock = clock

    def __getattr__(self, name: str):
        return getattr(self.clock, name)

    def listenTCP(self, port, factory, interface=""):  # noqa: N802 - reactor naming
        """A fake port."""
        return _Port()


class _Port:
    def getHost(self):  # noqa: N802 - twisted naming
        """A fake address."""
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 9180)

    def stopListening(self):  # noqa: N802 - twisted naming
        """Nothing to stop."""


def test_users_api_adds_disables_and_changes_passwords(env) -> None:
    """An admin adds a user (201), a duplicate is 409, disable/enable/password work and are audited."""
    admin = env.tokens["admin"]
    c = env.client
    resp = c.post("/api/users", {"username": "new", "password": PASSWORD, "role": "viewer"}, token=admin)
    assert resp.status == 201 and resp.json()["role"] == "viewer"
    assert c.post("/api/users", {"username": "new", "password": PASSWORD, "role": "viewer"}, token=admin).status == 409
    assert c.post("/api/users/new/disable", token=admin).json()["disabled"] is True
    assert login(c, "new").status == 401
    assert c.post("/api/users/new/enable", token=admin).json()["disabled"] is False
    assert c.post("/api/users/new/password", {"password": "short"}, token=admin).status == 400
    assert c.post("/api/users/new/password", {"password": "another long one"}, token=admin).status == 200
    assert login(c, "new", "another long one").status == 200
    assert c.post("/api/users/ghost/disable", token=admin).status == 404
    names = {u["username"] for u in c.get("/api/users", token=admin).json()}
    assert names == {"admin", "operator", "viewer", "new"}
    actions = [r["action"] for r in audit_rows(env, action="user")]
    assert actions == ["user.password", "user.enable", "user.disable", "user.add"]


def test_config_masks_database_passwords(env) -> None:
    """GET /api/config shows the config with a database URL's password masked."""
    env.app.vc.root.database = "postgresql://rb:secret@db/rb"
    body = env.client.get("/api/config", token=env.tokens["admin"]).json()
    assert body["database"] == "postgresql://rb:***@db/rb"
    assert [c["name"] for c in body["channels"]] == ["his", "flaky", "spare"]


def test_repeated_failed_logins_are_throttled(env) -> None:
    """Five wrong passwords for one user → 429 even with the right one, audited; other users are not locked out."""
    for _ in range(5):
        assert login(env.client, password="wrong password!").status == 401
    resp = login(env.client)
    assert resp.status == 429 and "too many failed logins" in resp.json()["error"]
    throttled = [r for r in audit_rows(env, action="login.failure") if "throttled" in str(r.get("detail"))]
    assert len(throttled) == 1
    assert login(env.client, user="viewer").status == 200


def test_throttle_window_slides_and_success_clears() -> None:
    """The count forgets failures older than the window; a success clears the user's count; addresses count too."""
    from engine.admin.throttle import LoginThrottle

    t = LoginThrottle(user_limit=2, address_limit=3, window=100.0)
    t.failed("a", "ip1", 0.0)
    assert t.retry_after("a", "ip1", 1.0) == 0
    t.failed("a", "ip1", 10.0)
    assert t.retry_after("a", "ip1", 20.0) == pytest.approx(80.0)
    assert t.retry_after("a", "ip1", 100.5) == 0  # the first failure left the window
    t.failed("a", "ip1", 101.0)
    assert t.retry_after("a", "ip1", 102.0) == pytest.approx(8.0)
    t.succeeded("a")
    assert t.retry_after("a", "ip1", 102.0) == 0
    t.failed("b", "ip1", 103.0)  # a third failure from one address: every name from it waits
    assert t.retry_after("c", "ip1", 104.0) == pytest.approx(6.0) and t.retry_after("c", "ip2", 104.0) == 0
