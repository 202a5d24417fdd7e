"""Console pages of destination queues (retry, skip) and the RIS: worklist, orders, one order with its history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.admin.http import ApiError
from engine.admin.server import Route
from engine.console.web import ConsoleCall, Page, Redirect

ORDER_FILTERS = ("state", "patient_id", "limit")
WORKLIST_FILTERS = ("modality", "date")


def _query(call: ConsoleCall, names: tuple[str, ...]) -> dict[str, str]:
    return {k: v.strip() for k, v in call.args.items() if k in names and v.strip()}


async def _listing(call: ConsoleCall, template: str, api: str, names: tuple[str, ...]) -> Page:
    query = _query(call, names)
    context: dict[str, Any] = {"query": query, "rows": [], "error": None}
    status = 200
    try:
        context["rows"] = await call.run("GET", api, query)
    except ApiError as exc:  # 404 without a RIS, 403 for a viewer's patient search, 400 for a bad date
        context["error"], status = exc.message, exc.status
    return Page(template, context, status)


async def queues(call: ConsoleCall) -> Page:
    """GET /console/queues: every destination queue (depth, oldest age, head, retry state); retry/skip buttons."""
    return Page("queues.j2", {"queues": await call.run("GET", "/api/queues")})


async def retry(call: ConsoleCall) -> Redirect:
    """POST /console/queues/{channel}/{destination}/retry: the API's retry now."""
    await call.run("POST", "/api/queues/{channel}/{destination}/retry")
    return Redirect("/console/queues")


async def skip(call: ConsoleCall) -> Redirect:
    """POST /console/queues/{channel}/{destination}/skip: the API's skip of the head delivery shown on the page."""
    raw = call.form.get("delivery_id", "")
    call.form["delivery_id"] = int(raw) if raw.isdigit() else None
    await call.run("POST", "/api/queues/{channel}/{destination}/skip")
    return Redirect("/console/queues")


async def worklist(call: ConsoleCall) -> Page:
    """GET /console/worklist?modality=&date=: open worklist steps (patient ids for operators only)."""
    return await _listing(call, "worklist.j2", "/api/ris/worklist", WORKLIST_FILTERS)


async def orders(call: ConsoleCall) -> Page:
    """GET /console/orders?state=&patient_id=: orders newest first (patient ids for operators only)."""
    return await _listing(call, "orders.j2", "/api/ris/orders", ORDER_FILTERS)


async def order(call: ConsoleCall) -> Page:
    """GET /console/orders/{accession}: the order, its patient, steps, MPPS, reports and state history (PHI)."""
    return Page("order.j2", {"o": await call.run("GET", "/api/ris/orders/{accession}")})


def routes(role: Callable[[str, str], str | None]) -> list[Route]:
    """The routes of this module (*role* gives the role of an admin API route)."""
    q = "/queues/{channel}/{destination}"
    return [
        Route("GET", "/console/queues", queues, role("GET", "/api/queues")),
        Route("POST", f"/console{q}/retry", retry, role("POST", f"/api{q}/retry")),
        Route("POST", f"/console{q}/skip", skip, role("POST", f"/api{q}/skip")),
        Route("GET", "/console/worklist", worklist, role("GET", "/api/ris/worklist")),
        Route("GET", "/console/orders", orders, role("GET", "/api/ris/orders")),
        Route("GET", "/console/orders/{accession}", order, role("GET", "/api/ris/orders/{accession}")),
    ]
