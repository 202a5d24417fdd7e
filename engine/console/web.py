"""What a console page handler works with: the call (an admin API call with a form), pages, redirects, templates.

A console page is a thin view over the admin API: it runs the API's own handler for the same data
(``call.run("GET", "/api/channels")``), so roles, PHI redaction and audit records are the API's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from engine.admin.http import ApiError
from engine.admin.server import Call, Route
from engine.admin.users import digest, same

CSRF_COOKIE = b"radbridge_console_csrf"
CSRF_FIELD = "csrf_token"
TEMPLATES = Path(__file__).with_name("templates")


@dataclass
class Page:
    """A page to render: a template under ``templates/`` with its context."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class Redirect:
    """A 303 See Other to a console path (after a form, or to the login page)."""

    location: str


@dataclass
class Asset:
    """A static file of the console (its stylesheet), served from the package."""

    body: bytes
    content_type: bytes


@dataclass
class ConsoleCall(Call):
    """An admin API call made by a console page: the body is the submitted form, not JSON."""

    form: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The form fields an API handler reads (without the CSRF token)."""
        return {k: v for k, v in self.form.items() if k != CSRF_FIELD}

    @property
    def csrf_token(self) -> str:
        """The session's CSRF token as the console keeps it (its cookie), to put in forms."""
        raw = self.request.getCookie(CSRF_COOKIE)
        return raw.decode("ascii", "replace") if raw else ""

    async def run(self, method: str, template: str, args: dict[str, str] | None = None) -> Any:
        """Run the admin API's handler of ``METHOD template`` for this caller; *args*, if given, replace the query."""
        if args is not None:
            self.args = {k: v for k, v in args.items() if v}
        return await api_route(self.api, method, template).handler(self)


def api_route(api: Any, method: str, template: str) -> Route:
    """The admin API route of ``METHOD template`` (a console page reuses its handler and role)."""
    for route in api.router.routes:
        if route.method == method and route.template == template:
            return route
    raise LookupError(f"the admin API has no route {method} {template}")


def check_form_csrf(call: ConsoleCall) -> None:
    """A form posted with a session cookie must carry that session's CSRF token; 403 otherwise."""
    sent = call.form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not sent or call.csrf_hash is None or not same(digest(sent), call.csrf_hash):
        raise ApiError(403, "CSRF token missing or wrong: reload the page (or log in again) and resubmit")


def form_fields(request: Any) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body that twisted.web parsed (last value wins)."""
    ctype = (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if request.method == b"POST" and ctype not in (b"", b"application/x-www-form-urlencoded"):
        raise ApiError(415, "console forms are application/x-www-form-urlencoded")
    return {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in request.args.items() if v}


def safe_next(target: str | None) -> str:
    """*target* when it is a console path on this site, else the dashboard (no open redirect)."""
    if target and target.startswith("/console/") and "//" not in target and "\\" not in target:
        return target
    return "/console/"


def _lines(text: Any) -> str:
    """HL7 segments (CR-separated) one per line for display."""
    return "" if text is None else str(text).replace("\r\n", "\n").replace("\r", "\n")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The console's Jinja environment: autoescape on for every template, strict about undefined names."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    env.filters["lines"] = _lines
    return env


def render(page: Page, base: dict[str, Any]) -> bytes:
    """The HTML of *page* with the context every page has (*base*: user, CSRF token, ...)."""
    return environment().get_template(page.template).render({**base, **page.context}).encode("utf-8")
