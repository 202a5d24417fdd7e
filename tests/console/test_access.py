"""Every console route: the role of the API route it shows, no session redirects (GET) or 401s (POST)."""

from __future__ import annotations

import pytest

from engine.console.site import ConsoleResource
from tests.console.conftest import ConsoleEnv

#: (method, a concrete path, least role); every console route is listed (a test compares them).
PAGES = [
    ("GET", "/console/", "viewer"),
    ("GET", "/console/messages", "viewer"),
    ("GET", "/console/messages/1", "operator"),
    ("POST", "/console/messages/1/reprocess", "operator"),
    ("POST", "/console/messages/1/resend", "operator"),
    ("POST", "/console/channels/his/start", "operator"),
    ("POST", "/console/channels/his/stop", "operator"),
    ("POST", "/console/channels/his/pause", "operator"),
    ("POST", "/console/channels/his/resume", "operator"),
    ("GET", "/console/queues", "viewer"),
    ("POST", "/console/queues/his/out/retry", "operator"),
    ("POST", "/console/queues/his/out/skip", "operator"),
    ("GET", "/console/worklist", "viewer"),
    ("GET", "/console/orders", "viewer"),
    ("GET", "/console/orders/ACC1", "operator"),
    ("POST", "/console/logout", "viewer"),
]
OPERATOR_ONLY = [(m, p) for m, p, r in PAGES if r == "operator"]


def test_every_route_is_listed(cenv: ConsoleEnv) -> None:
    """The table above names every protected console route, with the role the router gives it."""
    routes = ConsoleResource(cenv.env.api).router.routes
    protected = {(r.method, r.template): r.role for r in routes if r.role is not None}
    assert len(protected) == len(PAGES)
    router = ConsoleResource(cenv.env.api).router
    for method, path, role in PAGES:
        route, _ = router.match(method, path.split("/")[1:])
        assert route.role == role, path


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, _ in PAGES])
def test_no_session(cenv: ConsoleEnv, method: str, path: str) -> None:
    """Without a session a page redirects to the login form and a form post is 401."""
    b = cenv.browser()
    resp = b.get(path) if method == "GET" else b.post(path, csrf=False)
    if method == "GET":
        assert resp.status == 303 and resp.header("location").startswith("/console/login?next=")
    else:
        assert resp.status == 401


@pytest.mark.parametrize(("method", "path"), OPERATOR_ONLY)
def test_viewer_gets_403(cenv: ConsoleEnv, method: str, path: str) -> None:
    """A viewer (with a valid CSRF token) gets 403 on every operator page or action."""
    b = cenv.browser("viewer")
    resp = b.get(path) if method == "GET" else b.post(path)
    assert resp.status == 403 and "needs the operator role" in resp.body.decode()


@pytest.mark.parametrize(("method", "path"), OPERATOR_ONLY)
def test_operator_gets_past_the_checks(cenv: ConsoleEnv, method: str, path: str) -> None:
    """An operator is neither refused for role nor CSRF (the page may still say 404/409 about the target)."""
    b = cenv.browser("operator")
    resp = b.get(path) if method == "GET" else b.post(path)
    assert resp.status not in (401, 403), resp.body[:300]


def test_disabled_user_session_stops_working(cenv: ConsoleEnv) -> None:
    """Disabling a user ends their console session at once."""
    from engine.admin.users import thd_set_disabled

    b = cenv.browser("operator")
    assert b.get("/console/").status == 200
    cenv.env.app.store.transact_sync(thd_set_disabled, "operator", True, 0.0)
    assert b.get("/console/").status == 303
