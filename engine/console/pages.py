"""Console pages: login, dashboard, messages (search, one message by stage, reprocess, resend), channel actions.

Each page runs the admin API handler of the same data, so what a role sees and what is audited is
exactly what the API does; the role of a page is the role of the API route it shows.
"""

from __future__ import annotations

from typing import Any

from engine.admin.http import ApiError
from engine.admin.server import Route
from engine.console import pages_ris
from engine.console.dashboard import rows
from engine.console.web import CSRF_COOKIE, Asset, ConsoleCall, Page, Redirect, api_route, environment, safe_next
from engine.store.schema import STATUSES

SEARCH_FIELDS = ("channel", "status", "control_id", "patient_id", "accession", "type", "since", "until", "limit")
CHANNEL_VERBS = ("start", "stop", "pause", "resume")


async def login_form(call: ConsoleCall) -> Page:
    """GET /console/login: the login form."""
    return Page("login.j2", {"next": safe_next(call.args.get("next")), "error": None, "username": ""})


async def login(call: ConsoleCall) -> Page | Redirect:
    """POST /console/login: the API's login (session cookie, audit); the CSRF token kept in a console cookie."""
    target = safe_next(call.form.get("next"))
    try:
        answer = await call.run("POST", "/api/login")
    except ApiError as exc:
        context = {"next": target, "error": exc.message, "username": call.form.get("username", "")}
        return Page("login.j2", context, exc.status)
    cfg = call.api.config
    call.request.addCookie(CSRF_COOKIE, answer["csrf_token"].encode("ascii"), path="/console", httpOnly=True,
                           sameSite="strict", secure=cfg.cookie_secure or None,
                           max_age=str(int(cfg.session_timeout)))  # fmt: skip
    return Redirect(target)


async def logout(call: ConsoleCall) -> Redirect:
    """POST /console/logout: end the session (the API's logout) and forget the CSRF token."""
    await call.run("POST", "/api/logout")
    call.request.addCookie(CSRF_COOKIE, b"", path="/console", httpOnly=True, sameSite="strict", max_age="0")
    return Redirect("/console/login")


async def stylesheet(call: ConsoleCall) -> Asset:
    """GET /console/static/console.css: the one stylesheet (a template file, so that package data ships it)."""
    css = environment().loader.get_source(environment(), "console.css.j2")[0]
    return Asset(css.encode("utf-8"), b"text/css; charset=utf-8")


async def home(call: ConsoleCall) -> Redirect:
    """GET /console: the dashboard lives at /console/."""
    return Redirect("/console/")


async def dashboard(call: ConsoleCall) -> Page:
    """GET /console/: per channel state, received/filtered/queued/sent/errored, queue depths, peers up/down."""
    channels = await call.run("GET", "/api/channels")
    return Page("dashboard.j2", {"channels": rows(channels, call.api.app.metrics)})


async def messages(call: ConsoleCall) -> Page:
    """GET /console/messages?...: the search form and the matching messages (PHI columns for operators only)."""
    query = {k: v.strip() for k, v in call.args.items() if k in SEARCH_FIELDS and v.strip()}
    context: dict[str, Any] = {"query": query, "statuses": STATUSES, "error": None, "results": []}
    context["channels"] = [spec.config.name for spec in call.api.app.vc.channels]
    status = 200
    try:
        context["results"] = await call.run("GET", "/api/messages", query)
    except ApiError as exc:
        context["error"], status = exc.message, exc.status
    return Page("messages.j2", context, status)


async def message(call: ConsoleCall) -> Page:
    """GET /console/messages/{id}: raw, per stage, every delivery with its response or error; reprocess/resend."""
    m = await call.run("GET", "/api/messages/{id}")
    notice = None
    if call.args.get("from", "").isdigit():
        notice = f"reprocessed from message {call.args['from']}"
    elif call.args.get("requeued", "").isdigit():
        notice = f"{call.args['requeued']} delivery(ies) queued again"
    channels = [spec.config.name for spec in call.api.app.vc.channels]
    return Page("message.j2", {"m": m, "notice": notice, "channels": channels})


async def reprocess(call: ConsoleCall) -> Redirect:
    """POST /console/messages/{id}/reprocess: the API's reprocess; shows the new message."""
    if not call.form.get("channel"):
        call.form.pop("channel", None)
    new = await call.run("POST", "/api/messages/{id}/reprocess")
    return Redirect(f"/console/messages/{new['id']}?from={new['parent_id']}")


async def resend(call: ConsoleCall) -> Redirect:
    """POST /console/messages/{id}/resend: queue the ERROR deliveries (every one with all=on) again."""
    call.form["all"] = call.form.get("all") == "on"
    done = await call.run("POST", "/api/messages/{id}/resend")
    return Redirect(f"/console/messages/{done['id']}?requeued={done['requeued']}")


def _channel_action(verb: str) -> Any:
    async def act(call: ConsoleCall) -> Redirect:
        await call.run("POST", f"/api/channels/{{name}}/{verb}")
        return Redirect("/console/")

    act.__doc__ = f"POST /console/channels/{{name}}/{verb}: the API's {verb}; back to the dashboard."
    return act


def routes(api: Any) -> list[Route]:
    """The console's routes; each has the role of the admin API route whose handler it runs."""

    def role(method: str, template: str) -> str | None:
        return api_route(api, method, template).role

    return [
        Route("GET", "/console/login", login_form, None),
        Route("POST", "/console/login", login, None),
        Route("POST", "/console/logout", logout, role("POST", "/api/logout")),
        Route("GET", "/console", home, None),
        Route("GET", "/console/", dashboard, role("GET", "/api/channels")),
        Route("GET", "/console/static/console.css", stylesheet, None),
        Route("GET", "/console/messages", messages, role("GET", "/api/messages")),
        Route("GET", "/console/messages/{id}", message, role("GET", "/api/messages/{id}")),
        Route("POST", "/console/messages/{id}/reprocess", reprocess, role("POST", "/api/messages/{id}/reprocess")),
        Route("POST", "/console/messages/{id}/resend", resend, role("POST", "/api/messages/{id}/resend")),
        *[Route("POST", f"/console/channels/{{name}}/{v}", _channel_action(v), role("POST", f"/api/channels/{{name}}/{v}"))
          for v in CHANNEL_VERBS],
        *pages_ris.routes(role),
    ]  # fmt: skip
