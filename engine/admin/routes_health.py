"""Probes without credentials (they tell nothing about patients): liveness and readiness."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from engine.admin.server import Call, Route


def _ping(conn: Any) -> bool:
    return conn.execute(text("SELECT 1")).scalar() == 1


async def healthz(call: Call) -> dict[str, Any]:
    """GET /healthz: the process answers."""
    return {"status": "ok"}


async def readyz(call: Call) -> dict[str, Any]:
    """GET /readyz: 200 when the store answers and every enabled channel runs unpaused (its listener up), else 503."""
    checks: dict[str, str] = {}
    try:
        checks["store"] = "ok" if await call.api.store.read(_ping) else "failed"
    except Exception as exc:  # noqa: BLE001 - any store failure means not ready
        checks["store"] = f"failed: {type(exc).__name__}"
    for name, service in call.api.app.services.items():
        state = "paused" if getattr(service, "paused", False) else "ok"
        checks[f"channel/{name}"] = state if service.running else "stopped"
    ready = all(v == "ok" for v in checks.values())
    call.status = 200 if ready else 503
    return {"ready": ready, "checks": checks}


def routes() -> list[Route]:
    """The routes of this module."""
    return [Route("GET", "/healthz", healthz, None), Route("GET", "/readyz", readyz, None)]
