"""The admin API server: a twisted.web Site on the engine's reactor, one resource routing every call.

Each :class:`Route` names a method, a path template (the same as in ``openapi.yaml``), a handler
``async (Call) -> JSON value`` and the least role it needs (``None``: public). The resource
checks the path, the body size, the route, the credentials, the role and (for cookie sessions)
the CSRF token, in that order; every failure is a JSON ``{"error": ...}`` with its 4xx.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, threads
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from engine.admin import auth
from engine.admin.audit import SUCCESS, AuditRecord, AuditTrail
from engine.admin.http import JSON, ApiError, LimitedRequest, encode, path_segments, query_args, read_json
from engine.admin.schema import OPERATOR, ROLES
from engine.admin.throttle import LoginThrottle
from engine.admin.users import thd_bootstrap, thd_has_users

log = logging.getLogger("radbridge.admin")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """One endpoint: METHOD /path/{param} -> handler, for users with at least *role*."""

    method: str
    template: str
    handler: Handler
    role: str | None

    @property
    def parts(self) -> list[str]:
        """The template's segments (``{name}`` for a parameter)."""
        return self.template.split("/")[1:]


@dataclass
class Call:
    """One request as a handler sees it: parameters, the user, and ways to answer and audit."""

    api: AdminApi
    request: Any
    params: dict[str, str]
    args: dict[str, str]
    remote: str
    user: dict[str, Any] | None = None
    via: str | None = None
    csrf_hash: str | None = None
    status: int = 200
    headers: dict[bytes, bytes] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The JSON object sent (``{}`` when none)."""
        return read_json(self.request)

    @property
    def phi(self) -> bool:
        """Whether the caller may see PHI (operator or admin)."""
        return self.user is not None and ROLES.index(self.user["role"]) >= ROLES.index(OPERATOR)

    async def audit(self, action: str, target: str | None = None, outcome: str = SUCCESS,
                    detail: dict[str, Any] | None = None, username: str | None = None) -> None:  # fmt: skip
        """Record an audit event by the caller (waits for the store)."""
        user = self.user or {}
        record = AuditRecord(action, username or user.get("username"), user.get("role"), target, outcome,
                             self.remote, detail)  # fmt: skip
        await self.api.audit.record(record)


class Router:
    """Finds the route of a method and path; 404 for an unknown path, 405 for a known path and another method."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def match(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        """(route, path parameters)."""
        allowed = []
        for r in self.routes:
            params = _bind(r.parts, segments)
            if params is None:
                continue
            if r.method == method:
                return r, params
            allowed.append(r.method)
        if allowed:
            raise ApiError(405, f"method {method} not allowed here", {b"Allow": ", ".join(sorted(allowed)).encode()})
        raise ApiError(404, "no such endpoint")


def _bind(parts: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    params = {}
    for part, seg in zip(parts, segments):
        if part.startswith("{"):
            if not seg:
                return None
            params[part[1:-1]] = seg
        elif part != seg:
            return None
    return params


class AdminResource(Resource):
    """The single resource behind every admin URL."""

    isLeaf = True

    def __init__(self, api: AdminApi) -> None:
        super().__init__()
        self.api = api

    def render(self, request: Any) -> int:
        """Answer asynchronously; JSON in every case."""
        d = defer.Deferred.fromCoroutine(self._handle(request))
        d.addCallback(lambda out: _write(request, *out))
        d.addErrback(lambda f: log.error("admin response failed: %s", f.getErrorMessage()))
        return NOT_DONE_YET

    async def _handle(self, request: Any) -> tuple[int, Any, dict[bytes, bytes]]:
        method = request.method.decode("ascii", "replace")
        route = None
        try:
            segments = path_segments(request.path.split(b"?", 1)[0])
            if getattr(request, "too_large", False):
                raise ApiError(413, f"request body larger than {request.max_body} bytes")
            route, params = self.api.router.match(method, segments)
            call = Call(self.api, request, params, query_args(request), _remote(request))
            if route.role is not None:
                await auth.authenticate(call)
                if call.via == "cookie" and method not in SAFE_METHODS:
                    auth.check_csrf(call)
                auth.require_role(call, route.role)
            result = await route.handler(call)
            return call.status, result, call.headers
        except ApiError as exc:
            return exc.status, {"error": exc.message}, exc.headers
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 without details (they may quote PHI)
            where = route.template if route else "?"
            log.error("admin %s %s failed: %s", method, where, type(exc).__name__)
            log.debug("admin failure", exc_info=True)
            return 500, {"error": "internal error"}, {}


def _remote(request: Any) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)


def _write(request: Any, status: int, body: Any, headers: dict[bytes, bytes]) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"X-Frame-Options", b"DENY")
    for k, v in headers.items():
        request.setHeader(k, v)
    data = encode(body)
    request.setHeader(b"Content-Length", str(len(data)).encode())
    request.write(data)
    request.finish()


class AdminSite(Site):
    """A Site with bounded request bodies and no access log (URLs may carry patient ids)."""

    def __init__(self, resource: Resource, max_body: int, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.requestFactory = type("AdminRequest", (LimitedRequest,), {"max_body": max_body})

    def log(self, request: Any) -> None:
        """No access log."""


class AdminApi:
    """The admin API of one running App: routes, credentials, the audit trail, the listening port."""

    def __init__(self, app: Any, config: Any, *, environ: Any = None) -> None:
        from engine.admin.routes import all_routes

        self.app = app
        self.config = config
        self.store = app.store
        self.reactor = app.reactor
        self.environ = environ
        self.audit = AuditTrail(app.store, config.syslog)
        self.router = Router(all_routes())
        self.throttle = LoginThrottle()
        self.port: Any = None

    def now(self) -> float:
        """Wall-clock seconds."""
        return time.time()

    def blocking(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Run CPU-heavy *fn* (password hashing) in the reactor's thread pool (inline with a test clock)."""
        pool = getattr(self.reactor, "getThreadPool", None)
        if pool is None:
            return defer.maybeDeferred(fn, *args)
        return threads.deferToThreadPool(self.reactor, pool(), fn, *args)

    def site(self) -> AdminSite:
        """The twisted.web Site serving the API, with the web console at /console (engine/console)."""
        from engine.console import mount

        return AdminSite(mount(self, AdminResource(self)), self.config.max_body, reactor=self.reactor)

    @defer.inlineCallbacks
    def start(self):
        """Create the bootstrap admin from the environment if asked, then listen."""
        created = yield self.store.transact(thd_bootstrap, self.environ, self.now())
        if created:
            log.info("admin user %s created from the environment", created)
        if not (yield self.store.read(thd_has_users)):
            log.warning("admin API: no users yet (radbridge users add, or RADBRIDGE_ADMIN_USER/PASSWORD at start)")
        cfg = self.config
        self.port = self.reactor.listenTCP(cfg.port, self.site(), interface=cfg.host)
        log.info("admin API on http://%s:%d/api", cfg.host, self.port.getHost().port)

    @defer.inlineCallbacks
    def stop(self):
        """Stop listening and close the syslog socket."""
        if self.port is not None:
            port, self.port = self.port, None
            yield port.stopListening()
        self.audit.close()
