"""Console messages: search, one message by stage, reprocess and resend with CSRF, roles, escaping, audit."""

from __future__ import annotations

import re

from engine.store.queries import thd_search
from tests.admin.conftest import ORM, audit_rows
from tests.console.conftest import ConsoleEnv, text

SCRIPT = "<script>alert(1)</script>"


def _inject(cenv: ConsoleEnv, cid: str = "C1", pid: str = "PAT1", acc: str = "ACC1", channel: str = "his") -> int:
    cenv.env.inject(channel, ORM.format(cid=cid, pid=pid, acc=acc))
    (row,) = cenv.env.app.store.read_sync(thd_search, control_id=cid)
    return row["id"]


def _received(cenv: ConsoleEnv, b, channel: str = "his") -> int:
    page = text(b.get("/console/"))
    found = re.search(rf'id="received-{channel}">(\d+)<', page)
    assert found, page
    return int(found.group(1))


def test_operator_finds_by_msh10_and_sees_patient_columns(cenv: ConsoleEnv) -> None:
    """Searching by MSH-10 lists that one message with its patient id and a link; the search is audited."""
    mid = _inject(cenv)
    _inject(cenv, "C2", "PAT2", "ACC2")
    page = text(cenv.browser("operator").get("/console/messages?control_id=C1&channel=&status="))
    assert f'href="/console/messages/{mid}"' in page and "PAT1" in page and "PAT2" not in page
    assert audit_rows(cenv.env, action="message.search")[0]["detail"] == {"control_id": "C1"}


def test_viewer_search_has_no_phi_and_no_link(cenv: ConsoleEnv) -> None:
    """A viewer's search shows ids and control ids but no patient id, accession or link; no patient filter."""
    _inject(cenv)
    b = cenv.browser("viewer")
    page = text(b.get("/console/messages?control_id=C1"))
    assert "C1" in page and "PAT1" not in page and "ACC1" not in page and "DOE" not in page
    assert 'class="open"' not in page and 'name="patient_id"' not in page
    refused = b.get("/console/messages?patient_id=PAT1")
    assert refused.status == 403 and "needs the operator role" in text(refused)


def test_viewer_cannot_open_a_message(cenv: ConsoleEnv) -> None:
    """A message's content is PHI: a viewer gets 403 and nothing of it, as from the API; nothing is audited."""
    mid = _inject(cenv)
    resp = cenv.browser("viewer").get(f"/console/messages/{mid}")
    assert resp.status == 403 and "PAT1" not in text(resp) and "DOE" not in text(resp)
    assert not audit_rows(cenv.env, action="message.view")


def test_operator_sees_every_stage_and_delivery_audited(cenv: ConsoleEnv) -> None:
    """One message shows the raw content by segment, its deliveries with status, and the view is audited."""
    mid = _inject(cenv)
    page = text(cenv.browser("operator").get(f"/console/messages/{mid}"))
    assert 'id="stage-received"' in page and "PID|1||PAT1^^^HOSP^MR||DOE^JOHN" in page
    assert "\nPID|1" in page  # segments one per line
    assert 'id="delivery-' in page and ">out <span" in page
    assert audit_rows(cenv.env, action="message.view")[0]["target"] == f"message/{mid}"


def test_unknown_message_is_404_page(cenv: ConsoleEnv) -> None:
    """An unknown id is a 404 page; a non-numeric one a 400."""
    b = cenv.browser("operator")
    assert b.get("/console/messages/999").status == 404
    assert b.get("/console/messages/abc").status == 400


def test_reprocess_refused_without_or_with_a_wrong_csrf_token(cenv: ConsoleEnv) -> None:
    """A reprocess form without the session's CSRF token (or with another) is 403 and creates nothing."""
    mid = _inject(cenv)
    b = cenv.browser("operator")
    before = _received(cenv, b)
    assert b.post(f"/console/messages/{mid}/reprocess", csrf=False).status == 403
    assert b.post(f"/console/messages/{mid}/reprocess", {"csrf_token": "x" * 43}).status == 403
    other = cenv.browser("operator")  # another session's token is not this one's
    assert b.post(f"/console/messages/{mid}/reprocess", {"csrf_token": other.csrf}).status == 403
    assert _received(cenv, b) == before
    assert not audit_rows(cenv.env, action="message.reprocess")


def test_reprocess_creates_a_message_and_the_counter_moves(cenv: ConsoleEnv) -> None:
    """Reprocess with the token redirects to the new message, the channel's received count goes up by one."""
    mid = _inject(cenv)
    b = cenv.browser("operator")
    before = _received(cenv, b)
    resp = b.post(f"/console/messages/{mid}/reprocess", {"channel": "his"})
    assert resp.status == 303
    new_id = int(re.fullmatch(rf"/console/messages/(\d+)\?from={mid}", resp.header("location")).group(1))
    assert new_id != mid
    page = text(b.get(resp.header("location")))
    assert f"reprocessed from message {mid}" in page and f'href="/console/messages/{mid}"' in page
    assert _received(cenv, b) == before + 1
    assert audit_rows(cenv.env, action="message.reprocess")[0]["detail"] == {"new_id": new_id, "channel": "his"}


def test_viewer_cannot_reprocess_even_with_its_token(cenv: ConsoleEnv) -> None:
    """A viewer's valid CSRF token does not give it the operator role: 403, nothing created."""
    mid = _inject(cenv)
    b = cenv.browser("viewer")
    assert b.post(f"/console/messages/{mid}/reprocess").status == 403
    assert len(cenv.env.app.store.read_sync(thd_search)) == 1


def test_resend_requeues_the_failed_delivery(cenv: ConsoleEnv) -> None:
    """Resend on a message whose delivery is in ERROR queues it again and says how many."""
    mid = _inject(cenv, channel="flaky")
    b = cenv.browser("operator")
    queues = b.get("/console/queues")
    delivery = int(re.search(r'name="delivery_id" value="(\d+)"', text(queues)).group(1))
    skipped = b.post("/console/queues/flaky/peer/skip", {"delivery_id": str(delivery)})
    assert skipped.status == 303 and audit_rows(cenv.env, action="queue.skip")
    resp = b.post(f"/console/messages/{mid}/resend")
    assert resp.status == 303 and resp.header("location") == f"/console/messages/{mid}?requeued=1"
    assert "1 delivery(ies) queued again" in text(b.get(resp.header("location")))


def test_markup_in_a_message_is_escaped_everywhere(cenv: ConsoleEnv) -> None:
    """A message carrying <script> in its fields shows as text in the search and stage views, never as markup."""
    mid = _inject(cenv, cid="X<b>1", pid=SCRIPT, acc='A"1')
    b = cenv.browser("operator")
    for path in ("/console/messages?control_id=X%3Cb%3E1", f"/console/messages/{mid}"):
        page = text(b.get(path))
        assert "<script" not in page and "<b>" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
