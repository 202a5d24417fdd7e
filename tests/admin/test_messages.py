"""Messages: search by every criterion, per-stage view (PHI, audited), reprocess and resend."""

from __future__ import annotations

import time

from tests.admin.conftest import ORM, audit_rows


def _feed(env) -> None:
    env.inject("his", ORM.format(cid="C1", pid="P1", acc="ACC1"))
    env.inject("his", ORM.format(cid="C2", pid="P2", acc="ACC2"))
    env.inject("flaky", ORM.format(cid="C3", pid="P1", acc="ACC3"))


def _ids(resp) -> list[int]:
    assert resp.status == 200, resp.body
    return [r["id"] for r in resp.json()]


def test_search_by_each_criterion(env) -> None:
    """MSH-10, patient id, accession, channel, status, type and time each narrow the search."""
    _feed(env)
    op = env.tokens["operator"]
    get = env.client.get
    assert _ids(get("/api/messages", token=op)) == [3, 2, 1]
    assert _ids(get("/api/messages?control_id=C2", token=op)) == [2]
    assert _ids(get("/api/messages?patient_id=P1", token=op)) == [3, 1]
    assert _ids(get("/api/messages?accession=ACC3", token=op)) == [3]
    assert _ids(get("/api/messages?channel=his&limit=1", token=op)) == [2]
    assert _ids(get("/api/messages?status=QUEUED", token=op)) == [3]
    assert _ids(get("/api/messages?type=ORM", token=op)) == [3, 2, 1]
    assert _ids(get("/api/messages?type=ADT", token=op)) == []
    assert _ids(get("/api/messages?since=1h", token=op)) == [3, 2, 1]
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600)) + "+00:00"
    assert _ids(get(f"/api/messages?since={future.replace('+', '%2B')}", token=op)) == []
    assert _ids(get("/api/messages?until=1h", token=op)) == []


def test_search_results_have_no_phi_for_a_viewer(env) -> None:
    """A viewer sees ids, states and MSH-10 but no patient id, accession or error text, and cannot filter by them."""
    _feed(env)
    viewer = env.tokens["viewer"]
    rows = env.client.get("/api/messages", token=viewer).json()
    assert rows and all("patient_id" not in r and "accession" not in r and "error" not in r for r in rows)
    assert {r["control_id"] for r in rows} == {"C1", "C2", "C3"}
    assert env.client.get("/api/messages?patient_id=P1", token=viewer).status == 403
    op_rows = env.client.get("/api/messages?control_id=C1", token=env.tokens["operator"]).json()
    assert op_rows[0]["patient_id"] == "P1" and op_rows[0]["accession"] == "ACC1"
    assert not audit_rows(env, user="viewer")
    assert audit_rows(env, action="message.search")[0]["detail"] == {"control_id": "C1"}


def test_bad_search_parameters_are_400(env) -> None:
    """Unknown parameters, statuses, limits and times are 400 with a message."""
    op = env.tokens["operator"]
    for query in ("nope=1", "status=LOST", "limit=0", "limit=x", "since=yesterday-ish"):
        resp = env.client.get(f"/api/messages?{query}", token=op)
        assert resp.status == 400 and resp.json()["error"], query


def test_show_gives_raw_and_stages_and_is_audited(env) -> None:
    """One message: its raw text, its stages and deliveries; the view is in the audit trail with who and where."""
    _feed(env)
    resp = env.client.get("/api/messages/1", token=env.tokens["operator"])
    body = resp.json()
    assert body["raw"].startswith("MSH|") and "DOE^JOHN" in body["raw"]
    assert body["stages"][0] == {"stage": "received", "content": body["raw"], "charset": "utf-8"}
    assert body["deliveries"][0]["destination"] == "out" and body["deliveries"][0]["status"] == "SENT"
    (row,) = audit_rows(env, action="message.view")
    assert (row["username"], row["role"], row["target"], row["remote"]) == ("operator", "operator", "message/1",
                                                                           "127.0.0.1")  # fmt: skip


def test_unknown_and_malformed_ids(env) -> None:
    """An unknown message is 404, a non-numeric id 400, for show, reprocess and resend alike."""
    op = env.tokens["operator"]
    assert env.client.get("/api/messages/999", token=op).status == 404
    assert env.client.get("/api/messages/abc", token=op).status == 400
    assert env.client.post("/api/messages/999/reprocess", token=op).status == 404
    assert env.client.post("/api/messages/-1/resend", token=op).status == 400


def test_reprocess_makes_a_new_message_and_delivers_it(env) -> None:
    """Reprocess stores a child message (201) that the running queue delivers; the channel counter moves."""
    _feed(env)
    op = env.tokens["operator"]
    before = sum(env.client.get("/api/channels/his", token=op).json()["counters"]["messages"].values())
    resp = env.client.post("/api/messages/1/reprocess", token=op)
    assert resp.status == 201
    new = resp.json()
    assert new["parent_id"] == 1 and new["channel"] == "his" and len(new["deliveries"]) == 1
    env.inject("flaky", ORM.format(cid="C9", pid="P9", acc="A9"))
    assert len(env.app.services["his"].queues["out"].connector.received) == 3
    after = sum(env.client.get("/api/channels/his", token=op).json()["counters"]["messages"].values())
    assert after == before + 1
    child = env.client.get(f"/api/messages/{new['id']}", token=op).json()
    assert child["parent_id"] == 1 and child["origin"] == "reprocess:1"
    assert audit_rows(env, action="message.reprocess")[0]["detail"] == {"channel": "his", "new_id": new["id"]}


def test_reprocess_into_another_channel(env) -> None:
    """reprocess {channel} runs the message through that channel; an unknown one is 404, a bad type 400."""
    _feed(env)
    op = env.tokens["operator"]
    assert env.client.post("/api/messages/1/reprocess", {"channel": "flaky"}, token=op).json()["channel"] == "flaky"
    assert env.client.post("/api/messages/1/reprocess", {"channel": "nope"}, token=op).status == 404
    assert env.client.post("/api/messages/1/reprocess", {"channel": 3}, token=op).status == 400


def test_resend_only_error_deliveries_unless_all(env) -> None:
    """Resend queues ERROR deliveries only; all=true also SENT ones; a non-boolean all is 400."""
    _feed(env)
    op = env.tokens["operator"]
    assert env.client.post("/api/messages/1/resend", token=op).json() == {"id": 1, "requeued": 0, "deliveries": []}
    assert env.client.post("/api/messages/1/resend", {"all": True}, token=op).json()["requeued"] == 1
    assert env.client.post("/api/messages/1/resend", {"all": "yes"}, token=op).status == 400
    assert len(audit_rows(env, action="message.resend")) == 2
