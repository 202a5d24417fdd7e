"""The console's twisted.web resource and the one seam the admin server calls: :func:`mount`.

Requests under ``/console`` go to :class:`ConsoleResource`; every other path to the admin API's own
resource. A page is checked the way the API checks a call, in the same order: path, body size, route,
credentials (the admin session cookie), the CSRF token of a posted form, the role.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from engine.admin import auth
from engine.admin.http import ApiError, path_segments
from engine.admin.server import SAFE_METHODS, Router
from engine.console.web import Asset, ConsoleCall, Page, Redirect, check_form_csrf, environment, form_fields, render

log = logging.getLogger("radbridge.console")
PREFIX = b"/console"
HTML = b"text/html; charset=utf-8"
DIRECTIVES = ("default-src 'none'", "style-src 'self'", "img-src 'self'", "form-action 'self'",
              "frame-ancestors 'none'", "base-uri 'none'")  # fmt: skip
CSP = "; ".join(DIRECTIVES).encode("ascii")  # no script at all: the pages are plain forms and links


class ConsoleResource(Resource):
    """Every ``/console`` URL: server-rendered pages over the admin API's handlers."""

    isLeaf = True

    def __init__(self, api: Any) -> None:
        from engine.console.pages import routes

        super().__init__()
        self.api = api
        self.router = Router(routes(api))

    def render(self, request: Any) -> int:
        """Answer asynchronously with HTML (or a redirect)."""
        d = defer.Deferred.fromCoroutine(self._handle(request))
        d.addCallback(lambda out: _write(request, *out))
        d.addErrback(lambda f: log.error("console response failed: %s", f.getErrorMessage()))
        return NOT_DONE_YET

    async def _handle(self, request: Any) -> tuple[int, bytes, dict[bytes, bytes]]:
        method = request.method.decode("ascii", "replace")
        call: ConsoleCall | None = None
        route = None
        try:
            raw_path = request.path.split(b"?", 1)[0]
            segments = path_segments(raw_path)
            if getattr(request, "too_large", False):
                raise ApiError(413, f"request body larger than {request.max_body} bytes")
            route, params = self.router.match(method, segments)
            form = form_fields(request) if method == "POST" else {}
            call = ConsoleCall(self.api, request, params, {}, _peer(request), form=form)
            if method == "GET":
                call.args = form_fields(request)
            if route.role is not None:
                try:
                    await auth.authenticate(call)
                except ApiError as exc:
                    if exc.status == 401 and method in SAFE_METHODS:
                        return _redirect("/console/login?next=" + quote(raw_path.decode("ascii")))
                    raise
                if call.via == "cookie" and method not in SAFE_METHODS:
                    check_form_csrf(call)
                auth.require_role(call, route.role)
            out = await route.handler(call)
            if isinstance(out, Redirect):
                return _redirect(out.location, call.headers)
            if isinstance(out, Asset):
                return 200, out.body, {b"Content-Type": out.content_type, b"Cache-Control": b"max-age=3600"}
            return out.status, self._html(out, call), call.headers
        except ApiError as exc:
            page = Page("error.j2", {"status": exc.status, "message": exc.message}, exc.status)
            return exc.status, self._html(page, call), {}
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 without details (they may quote PHI)
            where = route.template if route else "?"
            log.error("console %s %s failed: %s", method, where, type(exc).__name__)
            log.debug("console failure", exc_info=True)
            page = Page("error.j2", {"status": 500, "message": "internal error"}, 500)
            return 500, self._html(page, None), {}

    def _html(self, page: Page, call: ConsoleCall | None) -> bytes:
        user = call.user if call is not None else None
        base = {"user": user, "phi": bool(call and call.phi), "csrf_token": call.csrf_token if user else ""}
        return render(page, base)


def _peer(request: Any) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)


def _redirect(location: str, headers: dict[bytes, bytes] | None = None) -> tuple[int, bytes, dict[bytes, bytes]]:
    return 303, b"", {**(headers or {}), b"Location": location.encode("ascii")}


def _write(request: Any, status: int, body: bytes, headers: dict[bytes, bytes]) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", HTML)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"X-Frame-Options", b"DENY")
    request.setHeader(b"Referrer-Policy", b"no-referrer")  # URLs may carry a searched patient id
    request.setHeader(b"Content-Security-Policy", CSP)
    for k, v in headers.items():
        request.setHeader(k, v)
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()


class ConsoleRoot(Resource):
    """The admin Site's root: ``/console...`` to the console, everything else to the API's resource."""

    isLeaf = True

    def __init__(self, console: ConsoleResource, api_resource: Resource) -> None:
        super().__init__()
        self.console = console
        self.api_resource = api_resource

    def render(self, request: Any) -> Any:
        """Dispatch on the path prefix."""
        path = request.path.split(b"?", 1)[0]
        if path == PREFIX or path.startswith(PREFIX + b"/"):
            return self.console.render(request)
        return self.api_resource.render(request)


def mount(api: Any, api_resource: Resource) -> Resource:
    """The root resource for the admin Site: the console at ``/console`` in front of *api_resource*."""
    environment()  # load the templates now: a broken install fails at start, not at the first page
    return ConsoleRoot(ConsoleResource(api), api_resource)
