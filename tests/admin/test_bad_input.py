"""Bad input: malformed JSON, wrong bodies, oversized bodies, unknown paths and methods, path traversal."""

from __future__ import annotations

import pytest

from tests.admin.conftest import ORM


def _error(resp, status: int) -> str:
    assert resp.status == status, resp.body
    assert resp.header("content-type").startswith("application/json")
    return resp.json()["error"]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "text"),
    [(b"{not json", "application/json", 400, "malformed JSON"),
     (b"[1, 2]", "application/json", 400, "JSON object"),
     (b"\xff\xfe", "application/json", 400, "malformed JSON"),
     (b'{"channel": "his"}', "text/plain", 415, "application/json")],
)  # fmt: skip
def test_bodies_that_are_not_a_json_object(env, body: bytes, ctype: str, status: int, text: str) -> None:
    """Malformed JSON and non-objects are 400, another content type 415; nothing is reprocessed."""
    env.inject("his", ORM.format(cid="C1", pid="P1", acc="A1"))
    resp = env.client.request("POST", "/api/messages/1/reprocess", body=body, token=env.tokens["operator"],
                              headers={"Content-Type": ctype})  # fmt: skip
    assert text in _error(resp, status)
    assert len(env.client.get("/api/messages", token=env.tokens["operator"]).json()) == 1


def test_login_with_malformed_json_is_400(env) -> None:
    """The public login endpoint checks its body too, and missing fields are named."""
    resp = env.client.request("POST", "/api/login", body=b'{"username": ', headers={"Content-Type": "application/json"})
    assert "malformed" in _error(resp, 400)
    assert "password" in _error(env.client.post("/api/login", {"username": "x"}), 400)


def test_oversized_body_is_413_announced_or_not(env) -> None:
    """A body over admin.max_body is 413 whether Content-Length announces it or the bytes only arrive."""
    big = b'{"x": "' + b"a" * 5000 + b'"}'
    resp = env.client.request("POST", "/api/login", body=big, headers={"Content-Type": "application/json"})
    assert "larger than 4096" in _error(resp, 413)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(big[i : i + 1000]), big[i : i + 1000]) for i in range(0, len(big), 1000))
    resp = env.client.request("POST", "/api/login", body=chunked + b"0\r\n\r\n", headers={
        "Content-Type": "application/json", "Transfer-Encoding": "chunked"})  # fmt: skip
    assert "larger than" in _error(resp, 413)


@pytest.mark.parametrize(
    "path",
    ["/api/../healthz", "/api/messages/..", "/api/messages/..%2F..%2Fetc%2Fpasswd", "/api/ris/orders/..%2F..%2Fx",
     "/api/archive/studies/%2e%2e", "/api/messages/1%00", "/api/ris/orders/a%5C..%5Cb"],
)  # fmt: skip
def test_path_traversal_is_400(env, path: str) -> None:
    """Dot segments, encoded slashes or backslashes and NULs in a path are refused before any route runs."""
    assert "invalid path" in _error(env.client.get(path, token=env.tokens["admin"]), 400)


def test_unknown_endpoint_is_404_and_wrong_method_405(env) -> None:
    """An unknown path is 404; a known path with another method is 405 with Allow."""
    assert _error(env.client.get("/api/nothing", token=env.tokens["admin"]), 404) == "no such endpoint"
    resp = env.client.request("DELETE", "/api/channels/his", token=env.tokens["admin"])
    _error(resp, 405)
    assert resp.header("allow") == "GET"


def test_unknown_ids_are_404(env) -> None:
    """Unknown channels, messages, users and queues each answer 404 with a message."""
    admin = env.tokens["admin"]
    assert "no channel" in _error(env.client.get("/api/channels/ghost", token=admin), 404)
    assert "no message" in _error(env.client.get("/api/messages/424242", token=admin), 404)
    assert "no user" in _error(env.client.post("/api/users/ghost/enable", token=admin), 404)
    assert "no running queue" in _error(env.client.post("/api/queues/his/ghost/skip", token=admin), 404)


def test_a_handler_bug_is_a_500_without_details(env, monkeypatch) -> None:
    """An unexpected exception answers 500 "internal error" (the exception text may quote PHI)."""
    from engine.admin import routes_channels

    def broken(*args, **kw):
        raise RuntimeError("DOE^JOHN")

    monkeypatch.setattr(routes_channels, "thd_channel_counters", broken)
    resp = env.client.get("/api/channels", token=env.tokens["viewer"])
    assert _error(resp, 500) == "internal error" and b"DOE" not in resp.body
