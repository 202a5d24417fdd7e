"""The admin API of the real ``radbridge run``: bootstrap admin, login, search by MSH-10, reprocess, counters."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from typing import Any

import pytest

from tests.integration.helpers import (
    MLLP_SEND,
    free_port,
    make_orm,
    parse_mllp_send_output,
    run_cli,
    wait_until,
    write_config,
    write_mllp_file,
)

pytestmark = pytest.mark.integration
PASSWORD = "integration admin pass"


class Api:
    """A cookie-keeping JSON client of the admin API (urllib, bounded timeouts)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.csrf: str | None = None

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """(status, JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.csrf and method != "GET":
            req.add_header("X-CSRF-Token", self.csrf)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def _received(api: Api) -> int:
    status, channel = api.call("GET", "/api/channels/adm")
    assert status == 200
    return sum(channel["counters"]["messages"].values())


def test_login_search_reprocess_and_counter(tmp_path, downstream, engine_factory) -> None:
    """Bootstrap admin from the environment, log in, find an mllp_send message by MSH-10, reprocess it, count +1."""
    port, admin_port = free_port(), free_port()
    config = write_config(tmp_path / "cfg.yaml", {
        "data_dir": str(tmp_path / "data"),
        "metrics": {"enabled": False},
        "admin": {"enabled": True, "host": "127.0.0.1", "port": admin_port},
        "channels": [{
            "name": "adm",
            "source": {"type": "mllp_listener", "port": port},
            "destinations": [{"name": "down", "type": "mllp_sender", "host": "127.0.0.1", "port": downstream.port}],
        }],
    })  # fmt: skip
    env = {"RADBRIDGE_ADMIN_USER": "boss", "RADBRIDGE_ADMIN_PASSWORD": PASSWORD}
    engine = engine_factory(config, env).start_ready()
    try:
        api = Api(admin_port)
        assert api.call("GET", "/healthz") == (200, {"status": "ok"})
        assert api.call("GET", "/readyz")[0] == 200
        assert api.call("GET", "/api/channels")[0] == 401
        status, login = api.call("POST", "/api/login", {"username": "boss", "password": PASSWORD})
        assert status == 200 and login["role"] == "admin"
        api.csrf = login["csrf_token"]

        path = write_mllp_file(tmp_path / "in.hl7", [make_orm("ADMIN-1", "PAT77", "ACC77")])
        out = subprocess.run([MLLP_SEND, "-p", str(port), "-f", str(path), "127.0.0.1"], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
        assert parse_mllp_send_output(out.stdout) == [("AA", "ADMIN-1")]
        downstream.wait_for(["ADMIN-1"], timeout=10)

        status, rows = api.call("GET", "/api/messages?control_id=ADMIN-1")
        assert status == 200 and len(rows) == 1 and rows[0]["patient_id"] == "PAT77"
        mid = rows[0]["id"]
        before = _received(api)
        status, new = api.call("POST", f"/api/messages/{mid}/reprocess")
        assert status == 201 and new["parent_id"] == mid
        assert _received(api) == before + 1
        wait_until(lambda: downstream.count() >= 2, 10, what="the reprocessed copy downstream")
        wait_until(lambda: api.call("GET", f"/api/messages/{new['id']}")[1]["deliveries"][0]["status"] == "SENT", 10,
                   what="the reprocessed delivery marked SENT")  # fmt: skip

        api.csrf = None
        assert api.call("POST", f"/api/messages/{mid}/reprocess")[0] == 403  # the cookie alone is not enough
    finally:
        assert engine.terminate() == 0
    audit = run_cli("audit", "--config", str(config), "--json", "--user", "boss")
    assert audit.returncode == 0, audit.stderr
    actions = [r["action"] for r in json.loads(audit.stdout)]
    assert actions[-1] == "login.success" and "message.reprocess" in actions and "message.view" in actions
    assert "PAT77" not in engine.log() and "DOE" not in engine.log()
