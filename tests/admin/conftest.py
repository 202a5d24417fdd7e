"""Fixtures for the admin API: an App on a Clock with memory channels, users of each role, an in-process HTTP client.

The client speaks real HTTP/1.1 bytes to the admin Site's protocol over a ``StringTransport`` (no socket),
so body limits, headers and cookies go through twisted.web exactly as over TCP.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from engine.admin.server import AdminApi
from engine.admin.users import thd_add_token, thd_add_user
from engine.app import App
from engine.config.validate import validate_config
from tests.admin.openapi_check import check_response
from tests.engine import conftest as engine_fixtures
from tests.engine.conftest import flush

clock, sqlite_store, any_store = engine_fixtures.clock, engine_fixtures.sqlite_store, engine_fixtures.any_store
store_url, pg_url = engine_fixtures.store_url, engine_fixtures.pg_url

CONFIG = """\
data_dir: {data}
metrics: {{enabled: false}}
admin: {{enabled: false, max_body: 4096}}
channels:
  - name: his
    source: {{type: memory}}
    destinations:
      - {{name: out, type: memory}}
  - name: flaky
    source: {{type: memory}}
    destinations:
      - name: peer
        type: memory
        fail_times: 1000
        retry: {{max_attempts: 50, initial_delay: 3600}}
  - name: spare
    enabled: false
    source: {{type: memory}}
    destinations: [{{name: out, type: memory}}]
{extra}"""

PASSWORD = "correct horse battery"
ORM = (
    "MSH|^~\\&|HIS|HOSP|RIS|RAD|20260101120000||ORM^O01|{cid}|P|2.3.1\r"
    "PID|1||{pid}^^^HOSP^MR||DOE^JOHN||19700101|M\r"
    "ORC|NW|PA1\r"
    "OBR|1|PA1||CT^CT HEAD||||||||||||||{acc}"
)


@dataclass
class Response:
    """An HTTP response parsed from the bytes the server wrote."""

    status: int
    headers: dict[str, list[str]]
    body: bytes
    request: Any = None

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The last value of header *name* (case-insensitive)."""
        values = self.headers.get(name.lower())
        return values[-1] if values else None


@dataclass
class Client:
    """Sends one request per connection to the admin Site; keeps cookies; validates every answer against OpenAPI."""

    api: AdminApi
    clock: Clock
    cookies: dict[str, str] = field(default_factory=dict)
    validate: bool = True

    def request(self, method: str, path: str, *, body: bytes | None = None, json_body: Any = None,
                token: str | None = None, headers: dict[str, str] | None = None) -> Response:  # fmt: skip
        """Send and wait (driving the Clock and the store) until the response is complete."""
        hdrs = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None and "Transfer-Encoding" not in hdrs:
            hdrs.setdefault("Content-Length", str(len(body)))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        site = self.api.site()
        proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        proto.makeConnection(transport)
        data = head.encode("latin-1") + (body or b"")
        for i in range(0, len(data), 65536):
            proto.dataReceived(data[i : i + 65536])
        for _ in range(50):
            if _complete(transport.value()):
                break
            flush(self.api.store, self.clock)
            self.clock.advance(0)
        resp = _parse(transport.value())
        proto.connectionLost(None)
        for value in resp.headers.get("set-cookie", []):
            cookie = SimpleCookie(value)
            for k, morsel in cookie.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(k, None)
                else:
                    self.cookies[k] = morsel.value
        if self.validate:
            check_response(method, path, resp, hdrs, body)
        return resp

    def get(self, path: str, **kw: Any) -> Response:
        """GET *path*."""
        return self.request("GET", path, **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> Response:
        """POST *path* with an optional JSON body."""
        return self.request("POST", path, json_body=json_body, **kw)


def _complete(data: bytes) -> bool:
    if b"\r\n\r\n" not in data:
        return False
    head, body = data.split(b"\r\n\r\n", 1)
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _parse(data: bytes) -> Response:
    assert b"\r\n\r\n" in data, f"no complete response: {data[:200]!r}"
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Response(status, headers, body)


@dataclass
class Env:
    """The App, its admin API, a client, and a bearer token per role."""

    app: App
    api: AdminApi
    clock: Clock
    client: Client
    tokens: dict[str, str]

    def inject(self, channel: str, text: str) -> Any:
        """Feed *text* to the memory source of *channel* and let it commit."""
        d = self.app.services[channel].source.inject(text)
        for _ in range(10):
            flush(self.app.store, self.clock)
        return d

    def new_client(self) -> Client:
        """Another client (its own cookies)."""
        return Client(self.api, self.clock)


def make_env(tmp_path: Path, extra: str = "", environ: dict[str, str] | None = None) -> Iterator[Env]:
    """Build and start an App, add users admin/operator/viewer with a token each; stop it afterwards."""
    path = tmp_path / "radbridge.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "data", extra=extra))
    vc = validate_config(path, check_ports=False)
    clock = Clock()
    app = App(vc, clock)
    d = app.start()
    for _ in range(20):
        flush(app.store, clock)
    assert d.called
    api = AdminApi(app, vc.root.admin, environ=environ or {})
    tokens = {}
    now = time.time()
    for role in ("admin", "operator", "viewer"):
        app.store.transact_sync(thd_add_user, role, PASSWORD, role, now)
        tokens[role] = app.store.transact_sync(thd_add_token, role, "test", now)
    env = Env(app, api, clock, Client(api, clock), tokens)
    try:
        yield env
    finally:
        d = app.stop()
        for _ in range(20):
            flush(app.store, clock)
        api.audit.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A running App with memory channels his (memory out), flaky (peer always failing) and spare (disabled)."""
    yield from make_env(tmp_path)


def audit_rows(env: Env, **filters: Any) -> list[dict[str, Any]]:
    """The audit trail as stored (newest first)."""
    from engine.admin.audit import thd_audit_list

    return env.app.store.read_sync(thd_audit_list, **filters)


def path_of(url: str) -> str:
    """The path of a URL (no query)."""
    return urlsplit(url).path
