"""Every endpoint: no credentials give 401, a role below the endpoint's gives 403, the right role gets past both."""

from __future__ import annotations

import pytest

from engine.admin.http import path_segments
from engine.admin.routes import all_routes
from engine.admin.server import Router
from engine.admin.users import thd_add_token, thd_set_disabled

#: (method, a concrete path, least role); public endpoints have None.
ENDPOINTS = [
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("POST", "/api/login", None),
    ("POST", "/api/logout", "viewer"),
    ("GET", "/api/me", "viewer"),
    ("GET", "/api/users", "admin"),
    ("POST", "/api/users", "admin"),
    ("POST", "/api/users/viewer/disable", "admin"),
    ("POST", "/api/users/viewer/enable", "admin"),
    ("POST", "/api/users/viewer/password", "admin"),
    ("GET", "/api/audit", "admin"),
    ("GET", "/api/config", "admin"),
    ("GET", "/api/channels", "viewer"),
    ("GET", "/api/channels/his", "viewer"),
    ("POST", "/api/channels/his/start", "operator"),
    ("POST", "/api/channels/his/stop", "operator"),
    ("POST", "/api/channels/his/pause", "operator"),
    ("POST", "/api/channels/his/resume", "operator"),
    ("GET", "/api/queues", "viewer"),
    ("POST", "/api/queues/his/out/retry", "operator"),
    ("POST", "/api/queues/his/out/skip", "operator"),
    ("GET", "/api/messages", "viewer"),
    ("GET", "/api/messages/1", "operator"),
    ("POST", "/api/messages/1/reprocess", "operator"),
    ("POST", "/api/messages/1/resend", "operator"),
    ("GET", "/api/ris/orders", "viewer"),
    ("GET", "/api/ris/orders/ACC1", "operator"),
    ("GET", "/api/ris/worklist", "viewer"),
    ("GET", "/api/ris/unmatched", "viewer"),
    ("GET", "/api/archive/studies", "viewer"),
    ("POST", "/api/archive/verify", "operator"),
]
PROTECTED = [e for e in ENDPOINTS if e[2] is not None]
BELOW = {"operator": "viewer", "admin": "operator"}
RESTRICTED = [(m, p, BELOW[r]) for m, p, r in PROTECTED if r in BELOW]
VIEWER_LEVEL = [e for e in PROTECTED if e[2] == "viewer"]


def test_the_table_names_every_route_once() -> None:
    """Each route of the server appears exactly once in ENDPOINTS with the role it declares."""
    router = Router(all_routes())
    seen = {}
    for method, path, role in ENDPOINTS:
        route, _ = router.match(method, path_segments(path.encode()))
        assert route.role == role, (method, path)
        seen[(route.method, route.template)] = path
    assert set(seen) == {(r.method, r.template) for r in all_routes()}


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in PROTECTED])
def test_no_credentials_is_401(env, method: str, path: str) -> None:
    """Without a token or a session the endpoint answers 401 with a bearer challenge and a JSON error."""
    resp = env.client.request(method, path)
    assert resp.status == 401
    assert resp.header("www-authenticate") == 'Bearer realm="radbridge"'
    assert resp.json()["error"]


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in PROTECTED])
def test_unknown_token_is_401(env, method: str, path: str) -> None:
    """A made-up bearer token is refused with 401."""
    resp = env.client.request(method, path, token="rbt_not-a-real-token")
    assert resp.status == 401


@pytest.mark.parametrize(("method", "path", "role"), RESTRICTED)
def test_lower_role_is_403(env, method: str, path: str, role: str) -> None:
    """The role just below the endpoint's gets 403 (and so nothing changes)."""
    resp = env.client.request(method, path, token=env.tokens[role])
    assert resp.status == 403, resp.body
    assert "role" in resp.json()["error"]


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED)
def test_right_role_gets_past_the_checks(env, method: str, path: str, role: str) -> None:
    """The endpoint's own role is neither 401 nor 403 (whatever the endpoint then answers)."""
    resp = env.client.request(method, path, token=env.tokens[role], json_body={})
    assert resp.status not in (401, 403), resp.body


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in VIEWER_LEVEL])
def test_disabled_user_is_401_on_viewer_endpoints(env, method: str, path: str) -> None:
    """Viewer endpoints have no lower role; a disabled user's still-held token is refused with 401 there."""
    store = env.app.store
    token = store.transact_sync(thd_add_token, "viewer", "second", 0.0)
    assert env.client.request(method, path, token=token).status not in (401, 403)
    store.transact_sync(thd_set_disabled, "viewer", True, 1.0)
    assert env.client.request(method, path, token=token).status == 401


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, r in ENDPOINTS if r is None and m == "GET"])
def test_probes_need_no_credentials(env, method: str, path: str) -> None:
    """/healthz and /readyz answer without credentials (they carry no PHI)."""
    assert env.client.request(method, path).status == 200
