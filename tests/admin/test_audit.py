"""The audit trail: what is recorded, the read-only API, RFC 5424 syslog over UDP, and ``radbridge audit``/``users``."""

from __future__ import annotations

import io
import json
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.admin.audit import AuditRecord, AuditTrail, rfc5424
from engine.cli import main
from tests.admin.conftest import ORM, PASSWORD, audit_rows, make_env

RFC5424 = re.compile(rb"^<(\d+)>1 (\S+) (\S+) (\S+) (\d+) (\S+) - \xef\xbb\xbf(.*)$", re.S)


def test_logins_views_and_actions_are_recorded(env) -> None:
    """Login success and failure, a PHI view, a reprocess and a stop are each one record: who, when, what, where."""
    env.inject("his", ORM.format(cid="C1", pid="P1", acc="A1"))
    c = env.client
    c.post("/api/login", {"username": "operator", "password": "nope, wrong"})
    csrf = c.post("/api/login", {"username": "operator", "password": PASSWORD}).json()["csrf_token"]
    c.get("/api/messages/1")
    c.post("/api/messages/1/reprocess", headers={"X-CSRF-Token": csrf})
    c.post("/api/channels/his/stop", headers={"X-CSRF-Token": csrf})
    rows = audit_rows(env)
    assert [r["action"] for r in rows] == ["channel.stop", "message.reprocess", "message.view", "login.success",
                                          "login.failure"]  # fmt: skip
    assert all(r["username"] == "operator" and r["remote"] == "127.0.0.1" and r["at"] > 0 for r in rows)
    assert [r["outcome"] for r in rows][-2:] == ["success", "failure"]


def test_audit_api_filters_and_is_read_only(env) -> None:
    """GET /api/audit filters by user and action; PUT/PATCH/DELETE on it are refused and change nothing."""
    admin = env.tokens["admin"]
    env.client.post("/api/login", {"username": "viewer", "password": "wrong password"})
    env.client.post("/api/login", {"username": "operator", "password": PASSWORD})
    rows = env.client.get("/api/audit?action=login", token=admin).json()
    assert [r["action"] for r in rows] == ["login.success", "login.failure"]
    assert [r["action"] for r in env.client.get("/api/audit?user=viewer", token=admin).json()] == ["login.failure"]
    count = len(audit_rows(env))
    for method in ("PUT", "PATCH", "DELETE"):
        assert env.client.request(method, "/api/audit", token=admin, json_body={}).status == 405
        assert env.client.request(method, f"/api/audit/{rows[0]['id']}", token=admin).status == 404
    assert env.client.post("/api/audit", {"action": "forged"}, token=admin).status == 405
    assert len(audit_rows(env)) == count  # the refused calls added and removed nothing
    assert not audit_rows(env, action="forged")


def test_every_operation_only_inserts_audit_rows() -> None:
    """No code in engine/admin updates or deletes admin_audit (the trail is append-only)."""
    import engine.admin

    folder = Path(engine.admin.__file__).parent
    for path in folder.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"(update|delete)\(admin_audit", text), path.name


def test_rfc5424_message_carries_an_atna_audit_message() -> None:
    """The syslog line is RFC 5424 (PRI 85, version 1, MSGID IHE+RFC-3881, BOM) with a DICOM audit XML."""
    rec = AuditRecord("message.view", "ann", "operator", "message/7", "success", "127.0.0.1", at=1_700_000_000.5)
    m = RFC5424.match(rfc5424(rec, "radbridge", "host1"))
    assert m is not None
    pri, stamp, host, app, _, msgid, xml = m.groups()
    assert (pri, host, app, msgid) == (b"85", b"host1", b"radbridge", b"IHE+RFC-3881")
    assert stamp == b"2023-11-14T22:13:20.500000Z"
    root = ET.fromstring(xml)
    assert root.find("EventIdentification/EventID").get("csd-code") == "110110"
    assert root.find("EventIdentification").get("EventActionCode") == "R"
    assert root.find("ActiveParticipant").get("UserID") == "ann"
    assert root.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "message/7"
    failed = AuditRecord("login.failure", "x", None, None, "failure", "127.0.0.1", at=1.0)
    assert rfc5424(failed, "radbridge").startswith(b"<84>1 ")


def test_records_are_sent_to_a_udp_syslog_receiver(tmp_path: Path) -> None:
    """With admin.syslog set, a login failure reaches a UDP socket on 127.0.0.1 as one RFC 5424 datagram."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    try:
        port = receiver.getsockname()[1]
        for env in make_env(tmp_path):
            env.api.audit.close()
            env.api.audit = AuditTrail(env.app.store, _Syslog(port))
            env.client.post("/api/login", {"username": "mallory", "password": "guess guess"})
            data = receiver.recv(65536)
        m = RFC5424.match(data)
        assert m is not None and m.group(1) == b"84"
        assert ET.fromstring(m.group(7)).find("ActiveParticipant").get("UserID") == "mallory"
    finally:
        receiver.close()


class _Syslog:
    host, app_name = "127.0.0.1", "radbridge"

    def __init__(self, port: int) -> None:
        self.port = port


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config whose store the CLI opens."""
    path = tmp_path / "radbridge.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\nmetrics: {{enabled: false}}\nchannels: []\n")
    return path


def _cli(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(args))
    return code, capsys.readouterr().out


def test_users_and_audit_commands(config_file: Path, monkeypatch, capsys) -> None:
    """users add/list/passwd/token/disable manage the table; audit lists records with --user and --action."""
    cfg = ["--config", str(config_file)]
    assert _cli(monkeypatch, capsys, "users", "add", *cfg, "ann", "--role", "operator", "--password-stdin",
                stdin=PASSWORD + "\n")[0] == 0  # fmt: skip
    assert _cli(monkeypatch, capsys, "users", "add", *cfg, "bob", "--password-stdin", stdin="short\n")[0] == 1
    code, out = _cli(monkeypatch, capsys, "users", "list", *cfg, "--json")
    assert [(u["username"], u["role"]) for u in json.loads(out)] == [("ann", "operator")]
    assert (
        _cli(monkeypatch, capsys, "users", "passwd", *cfg, "ann", "--password-stdin", stdin="new password 1\n")[0] == 0
    )
    code, token = _cli(monkeypatch, capsys, "users", "token", *cfg, "ann", "--ttl", "1d")
    assert code == 0 and token.startswith("rbt_")
    assert _cli(monkeypatch, capsys, "users", "disable", *cfg, "ann")[0] == 0
    assert "disabled" in _cli(monkeypatch, capsys, "users", "list", *cfg)[1]
    assert _cli(monkeypatch, capsys, "users", "disable", *cfg, "ghost")[0] == 1

    from engine.admin.audit import thd_audit_insert
    from engine.store.store import Store

    store = Store(f"sqlite:///{config_file.parent / 'data' / 'radbridge.db'}", None, writer_mode="thread")
    for user, action in (("ann", "login.success"), ("bob", "login.failure"), ("ann", "message.view")):
        store.transact_sync(thd_audit_insert, AuditRecord(action, user, None, None, "success", "127.0.0.1").row())
    store.engine.dispose()
    code, out = _cli(monkeypatch, capsys, "audit", *cfg, "--json", "--user", "ann", "--since", "1h")
    assert [r["action"] for r in json.loads(out)] == ["message.view", "login.success"]
    code, out = _cli(monkeypatch, capsys, "audit", *cfg, "--action", "login")
    assert "login.failure" in out and "message.view" not in out and "2 record(s)" in out
