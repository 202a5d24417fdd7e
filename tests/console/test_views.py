"""Dashboard, queues, channel actions and the RIS pages (worklist, orders, one order with its history)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.conftest import ORM, audit_rows
from tests.admin.test_ris_archive import EXTRA
from tests.console.conftest import ConsoleEnv, make_cenv, text


@pytest.fixture
def ris_cenv(tmp_path: Path) -> Iterator[ConsoleEnv]:
    """The admin RIS test App (channel to-ris feeds a RIS) with the console mounted."""
    yield from make_cenv(tmp_path, EXTRA)


def _cell(page: str, key: str, channel: str) -> int:
    return int(re.search(rf'id="{key}-{channel}">(\d+)<', page).group(1))


def test_dashboard_counts_per_channel_and_shows_a_down_peer(cenv: ConsoleEnv) -> None:
    """Counters follow the store; a destination waiting to retry shows as a down peer with its depth."""
    cenv.env.inject("his", ORM.format(cid="D1", pid="P", acc="A"))
    cenv.env.inject("his", ORM.format(cid="D2", pid="P", acc="A"))
    cenv.env.inject("flaky", ORM.format(cid="D3", pid="P", acc="A"))
    page = text(cenv.browser("viewer").get("/console/"))
    assert _cell(page, "received", "his") == 2 and _cell(page, "sent", "his") == 2
    assert _cell(page, "received", "flaky") == 1 and _cell(page, "queued", "flaky") == 1
    assert _cell(page, "errored", "his") == 0
    flaky = page.split('data-channel="flaky"')[1].split("</tr>")[0]
    assert 'class="depth">1<' in flaky and 'class="peer peer-down"' in flaky
    his = page.split('data-channel="his"')[1].split("</tr>")[0]
    assert 'class="peer peer-up"' in his
    assert 'data-channel="spare"' in page and "disabled" in page


def test_viewer_dashboard_has_no_action_buttons(cenv: ConsoleEnv) -> None:
    """Start/stop buttons are shown to operators only."""
    assert "/console/channels/his/stop" not in text(cenv.browser("viewer").get("/console/"))
    assert "/console/channels/his/stop" in text(cenv.browser("operator").get("/console/"))


def test_stop_and_start_a_channel(cenv: ConsoleEnv) -> None:
    """An operator stops and starts a channel from the dashboard; both are audited; a wrong state is 409."""
    b = cenv.browser("operator")
    assert b.post("/console/channels/his/stop").status == 303
    assert not cenv.env.app.services["his"].running
    assert b.post("/console/channels/his/stop").status == 409
    assert b.post("/console/channels/his/start").status == 303
    assert cenv.env.app.services["his"].running
    assert [r["action"] for r in audit_rows(cenv.env, action="channel")][:2] == ["channel.start", "channel.stop"]


def test_queues_page(cenv: ConsoleEnv) -> None:
    """The queue view lists every destination queue with its depth and head; retry is audited."""
    cenv.env.inject("flaky", ORM.format(cid="Q1", pid="P", acc="A"))
    b = cenv.browser("operator")
    page = text(b.get("/console/queues"))
    row = page.split('data-queue="flaky/peer"')[1].split("</tr>")[0]
    assert 'class="num depth">1<' in row and "delivery" in row
    assert 'data-queue="his/out"' in page
    assert b.post("/console/queues/flaky/peer/retry").status == 303
    assert audit_rows(cenv.env, action="queue.retry")


def test_empty_ris_pages(cenv: ConsoleEnv) -> None:
    """Worklist and orders of a RIS with no order say so; an unknown order is a 404 page."""
    b = cenv.browser("operator")
    assert "no open step" in text(b.get("/console/worklist"))
    assert "no order" in text(b.get("/console/orders"))
    assert b.get("/console/orders/NOPE").status == 404


def test_worklist_and_orders_by_role(ris_cenv: ConsoleEnv) -> None:
    """Worklist and orders list the order; patient ids for operators only; a viewer's patient search is 403."""
    ris_cenv.env.inject("to-ris", ORM.format(cid="O1", pid="PAT1", acc="ACC100"))
    viewer, operator = ris_cenv.browser("viewer"), ris_cenv.browser("operator")
    for path in ("/console/worklist", "/console/orders"):
        v, o = text(viewer.get(path)), text(operator.get(path))
        assert "ACC100" in v and "PAT1" not in v and "/console/orders/ACC100" not in v
        assert "ACC100" in o and "PAT1" in o and "/console/orders/ACC100" in o
    assert viewer.get("/console/orders?patient_id=PAT1").status == 403
    assert "ACC100" in text(operator.get("/console/orders?patient_id=PAT1"))
    assert operator.get("/console/worklist?date=bad").status == 400


def test_order_page_with_history_is_audited(ris_cenv: ConsoleEnv) -> None:
    """One order shows patient, steps and its state history; the view is audited; viewers get 403."""
    ris_cenv.env.inject("to-ris", ORM.format(cid="O1", pid="PAT1", acc="ACC100"))
    page = text(ris_cenv.browser("operator").get("/console/orders/ACC100"))
    assert "DOE" in page and "PAT1" in page and 'id="history"' in page
    state = re.search(r'id="order-state">([^<]+)<', page).group(1)
    history = page.split('id="history"')[1].split("</table>")[0]
    assert f"<td>{state}</td>" in history
    assert audit_rows(ris_cenv.env, action="ris.order.view")[0]["target"] == "order/ACC100"
    assert ris_cenv.browser("viewer").get("/console/orders/ACC100").status == 403
