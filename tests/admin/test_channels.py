"""Channels (state, counters, start/stop/pause/resume), destination queues (retry now, skip), readiness."""

from __future__ import annotations

from tests.admin.conftest import ORM, audit_rows


def test_channels_list_states_counters_and_queues(env) -> None:
    """Every configured channel is listed with its state; counters and queue depths follow the store."""
    env.inject("his", ORM.format(cid="C1", pid="P1", acc="A1"))
    rows = {c["name"]: c for c in env.client.get("/api/channels", token=env.tokens["viewer"]).json()}
    assert {n: c["state"] for n, c in rows.items()} == {"his": "running", "flaky": "running", "spare": "disabled"}
    assert sum(rows["his"]["counters"]["messages"].values()) == 1
    assert rows["his"]["counters"]["deliveries"] == {"SENT": 1}
    assert rows["his"]["queues"][0]["depth"] == 0 and rows["spare"]["queues"] == []


def test_pause_stops_the_source_but_queues_drain(env) -> None:
    """Paused: the memory source refuses new input, a reprocessed message is still delivered; resume accepts again."""
    op = env.tokens["operator"]
    env.inject("his", ORM.format(cid="C1", pid="P1", acc="A1"))
    out = env.app.services["his"].queues["out"].connector
    assert env.client.post("/api/channels/his/pause", token=op).json()["state"] == "paused"
    refused: list = []
    env.inject("his", ORM.format(cid="C2", pid="P1", acc="A1")).addErrback(refused.append)
    assert refused and refused[0].check(RuntimeError)
    env.client.post("/api/messages/1/reprocess", token=op)
    env.inject("flaky", ORM.format(cid="C9", pid="P9", acc="A9"))  # lets the store and clock run
    assert len(out.received) == 2  # the original and the reprocessed copy
    assert env.client.post("/api/channels/his/pause", token=op).status == 409
    assert env.client.post("/api/channels/his/resume", token=op).json()["state"] == "running"
    assert env.inject("his", ORM.format(cid="C3", pid="P1", acc="A1")).called
    assert len(out.received) == 3
    assert [r["action"] for r in audit_rows(env, action="channel")] == [
        "channel.resume",
        "channel.pause",
        "channel.pause",
    ]
    assert audit_rows(env, action="channel")[1]["outcome"] == "failure"


def test_stop_and_start(env) -> None:
    """Stop stops the service (readyz 503), start runs it again (readyz 200); wrong states are 409."""
    op = env.tokens["operator"]
    assert env.client.post("/api/channels/his/start", token=op).status == 409
    assert env.client.post("/api/channels/his/stop", token=op).json()["state"] == "stopped"
    ready = env.client.get("/readyz")
    assert ready.status == 503 and ready.json()["checks"]["channel/his"] == "stopped"
    assert env.client.post("/api/channels/his/stop", token=op).status == 409
    assert env.client.post("/api/channels/his/start", token=op).json()["state"] == "running"
    assert env.client.get("/readyz").json() == {"ready": True, "checks": {"store": "ok", "channel/his": "ok",
                                                                         "channel/flaky": "ok"}}  # fmt: skip


def test_paused_channel_is_not_ready(env) -> None:
    """/readyz reports a paused listener as not ready."""
    env.client.post("/api/channels/flaky/pause", token=env.tokens["operator"])
    ready = env.client.get("/readyz")
    assert ready.status == 503 and ready.json()["checks"]["channel/flaky"] == "paused"


def test_unknown_and_disabled_channels(env) -> None:
    """An unknown channel is 404; a channel disabled in the config cannot be started (409)."""
    op = env.tokens["operator"]
    assert env.client.get("/api/channels/nope", token=op).status == 404
    assert env.client.post("/api/channels/nope/stop", token=op).status == 404
    resp = env.client.post("/api/channels/spare/start", token=op)
    assert resp.status == 409 and "disabled" in resp.json()["error"]


def test_queue_shows_a_waiting_head_and_retry_now_sends_it(env) -> None:
    """A failing head waits for its backoff; retry sends it at once (attempts + 1) instead of in an hour."""
    op = env.tokens["operator"]
    env.inject("flaky", ORM.format(cid="F1", pid="P1", acc="A1"))
    peer = env.app.services["flaky"].queues["peer"].connector
    queues = {q["destination"]: q for q in env.client.get("/api/queues", token=env.tokens["viewer"]).json()}
    q = queues["peer"]
    assert q["depth"] == 1 and q["waiting_retry"] and q["head"]["attempts"] == 1 and q["oldest_age"] >= 0
    resp = env.client.post("/api/queues/flaky/peer/retry", token=op)
    assert resp.status == 200 and resp.json()["retried"] is True
    assert peer.attempts == 2
    assert resp.json()["head"]["attempts"] == 2
    assert env.client.post("/api/queues/his/out/retry", token=op).json()["retried"] is False


def test_skip_sets_the_head_to_error_and_resend_queues_it_again(env) -> None:
    """Skip marks the waiting head ERROR (audited) and empties the queue; resend puts it back."""
    op = env.tokens["operator"]
    env.inject("flaky", ORM.format(cid="F1", pid="P1", acc="A1"))
    head = env.client.get("/api/queues", token=op).json()[1]["head"]
    assert (
        env.client.post("/api/queues/flaky/peer/skip", {"delivery_id": head["delivery_id"] + 1}, token=op).status == 409
    )
    resp = env.client.post("/api/queues/flaky/peer/skip", {"delivery_id": head["delivery_id"]}, token=op)
    assert resp.status == 200 and resp.json()["skipped"] == head["delivery_id"] and resp.json()["depth"] == 0
    msg = env.client.get(f"/api/messages/{head['message_id']}", token=op).json()
    assert msg["deliveries"][0]["status"] == "ERROR" and "skipped" in msg["deliveries"][0]["last_error"]
    assert env.client.post("/api/queues/flaky/peer/skip", token=op).status == 409
    resent = env.client.post(f"/api/messages/{head['message_id']}/resend", token=op).json()
    assert resent["requeued"] == 1 and resent["deliveries"] == [head["delivery_id"]]
    assert audit_rows(env, action="queue.skip")[0]["detail"] == {"delivery_id": head["delivery_id"]}


def test_unknown_queue_is_404(env) -> None:
    """A queue that does not exist answers 404."""
    assert env.client.post("/api/queues/his/nope/retry", token=env.tokens["operator"]).status == 404
    assert env.client.post("/api/queues/spare/out/skip", token=env.tokens["operator"]).status == 404
