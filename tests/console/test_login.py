"""Console login and logout: the admin session cookie, the CSRF cookie, redirects, audit, the mounted API."""

from __future__ import annotations

from tests.admin.conftest import audit_rows
from tests.console.conftest import ConsoleEnv, text


def test_anonymous_page_redirects_to_login_with_next(cenv: ConsoleEnv) -> None:
    """A page without a session answers 303 to the login form, which remembers where to go back."""
    b = cenv.browser()
    resp = b.get("/console/messages")
    assert resp.status == 303 and resp.header("location") == "/console/login?next=/console/messages"
    form = b.get("/console/login?next=/console/messages")
    assert form.status == 200 and 'name="next" value="/console/messages"' in text(form)


def test_login_sets_session_and_csrf_cookies_and_audits(cenv: ConsoleEnv) -> None:
    """The console login form opens an admin session, keeps its CSRF token, and is audited like the API's."""
    b = cenv.browser()
    resp = b.post("/console/login", {"username": "operator", "password": "correct horse battery",
                                     "next": "/console/queues"}, csrf=False)  # fmt: skip
    assert resp.status == 303 and resp.header("location") == "/console/queues"
    assert "radbridge_session" in b.client.cookies and b.csrf
    cookies = " ".join(resp.headers["set-cookie"])
    assert "HttpOnly" in cookies and "SameSite=strict" in cookies
    page = b.get("/console/")
    assert page.status == 200 and "operator (operator)" in text(page)
    assert audit_rows(cenv.env, action="login")[0]["action"] == "login.success"


def test_wrong_password_shows_the_form_again_with_401(cenv: ConsoleEnv) -> None:
    """A wrong password answers 401 with the form and a message; no cookie; a failure is audited."""
    b = cenv.browser()
    resp = b.login("operator", "not the password")
    assert resp.status == 401 and "wrong username or password" in text(resp)
    assert not b.client.cookies
    assert audit_rows(cenv.env, action="login")[0]["outcome"] == "failure"


def test_login_never_redirects_off_the_console(cenv: ConsoleEnv) -> None:
    """A next= that is not a console path is replaced by the dashboard (no open redirect)."""
    for target in ("//evil.example/", "https://evil.example/", "/api/config", "/console/\\\\evil"):
        b = cenv.browser()
        resp = b.post("/console/login", {"username": "viewer", "password": "correct horse battery",
                                         "next": target}, csrf=False)  # fmt: skip
        assert resp.header("location") == "/console/", target


def test_logout_needs_csrf_and_ends_the_session(cenv: ConsoleEnv) -> None:
    """Logout without the token is refused; with it the session ends and pages redirect to login again."""
    b = cenv.browser("viewer")
    assert b.post("/console/logout", csrf=False).status == 403
    resp = b.post("/console/logout")
    assert resp.status == 303 and resp.header("location") == "/console/login"
    assert b.get("/console/").status == 303
    assert audit_rows(cenv.env, action="logout")


def test_api_and_console_share_the_site(cenv: ConsoleEnv) -> None:
    """The mounted root still serves the JSON API; /console redirects to the dashboard; the CSS is served."""
    b = cenv.browser()
    assert b.get("/healthz").json() == {"status": "ok"}
    assert b.get("/api/channels").status == 401
    assert b.get("/console").header("location") == "/console/"
    css = b.get("/console/static/console.css")
    assert css.status == 200 and css.header("content-type").startswith("text/css") and b"table" in css.body


def test_security_headers_on_every_page(cenv: ConsoleEnv) -> None:
    """Pages are HTML with no-store caching, a CSP without inline script, no framing and no referrer."""
    resp = cenv.browser().get("/console/login")
    assert resp.header("content-type") == "text/html; charset=utf-8"
    assert resp.header("cache-control") == "no-store" and resp.header("x-frame-options") == "DENY"
    assert "script-src" not in resp.header("content-security-policy")
    assert "default-src 'none'" in resp.header("content-security-policy")
    assert resp.header("referrer-policy") == "no-referrer"


def test_bad_paths_and_methods(cenv: ConsoleEnv) -> None:
    """Traversal is 400, an unknown page 404, a wrong method 405, each as an HTML error page."""
    b = cenv.browser("operator")
    for path, status in (("/console/%2e%2e/api/config", 400), ("/console/nope", 404),
                         ("/console/messages/1/reprocess", 405)):  # fmt: skip
        resp = b.get(path)
        assert resp.status == status and f"<h1>{status}</h1>" in text(resp), path


def test_json_body_on_a_form_is_refused(cenv: ConsoleEnv) -> None:
    """A console form posted as JSON is 415: forms are urlencoded."""
    b = cenv.browser("operator")
    resp = b.client.request("POST", "/console/logout", json_body={"csrf_token": b.csrf})
    assert resp.status == 415


def test_the_static_route_serves_only_its_stylesheet(cenv: ConsoleEnv) -> None:
    """/console/static/ serves console.css and nothing else: traversal in any encoding is 400 or 404."""
    b = cenv.browser("operator")
    assert b.get("/console/static/console.css").status == 200
    for path in ("/console/static/..%2F..%2Fadmin%2Fopenapi.yaml", "/console/static/%2e%2e/templates/base.j2",
                 "/console/static/base.j2", "/console/static/console.css%00.j2", "/console/static/..\\\\x"):  # fmt: skip
        assert b.get(path).status in (400, 404), path
