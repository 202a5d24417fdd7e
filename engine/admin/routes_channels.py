"""Channels (status, counters, start/stop/pause/resume) and destination queues (depth, age, retry, skip)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from engine.admin.http import ApiError
from engine.admin.queries import thd_channel_counters
from engine.admin.schema import OPERATOR, VIEWER
from engine.admin.server import Call, Route
from engine.queue import SkipRefused
from engine.store.queries import thd_queue_stats


def _spec(call: Call, name: str) -> Any:
    for spec in call.api.app.vc.channels:
        if spec.config.name == name:
            return spec
    raise ApiError(404, f"no channel {name!r}")


def _state(call: Call, name: str) -> str:
    service = call.api.app.services.get(name)
    if service is None:
        return "disabled"
    if not service.running:
        return "stopped"
    return "paused" if getattr(service, "paused", False) else "running"


async def _queue(call: Call, channel: str, name: str, queue: Any) -> dict[str, Any]:
    depth, oldest = await call.api.store.read(thd_queue_stats, channel, name)
    head = queue.items[0] if queue.items else None
    retry = queue.retry_call is not None and queue.retry_call.active()
    return {
        "channel": channel, "destination": name, "depth": depth,
        "oldest_age": round(call.api.now() - oldest, 3) if oldest else None,
        "running": queue.running, "in_flight": queue.busy, "waiting_retry": retry,
        "head": {"delivery_id": head.id, "message_id": head.message_id, "attempts": head.attempts} if head else None,
    }  # fmt: skip


async def _channel(call: Call, spec: Any) -> dict[str, Any]:
    name = spec.config.name
    service = call.api.app.services.get(name)
    queues = [await _queue(call, name, q, service.queues[q]) for q in service.queues] if service else []
    return {
        "name": name, "state": _state(call, name), "description": spec.config.description,
        "source": spec.source.type, "destinations": [d.config.name for d in spec.destinations],
        "counters": await call.api.store.read(thd_channel_counters, name), "queues": queues,
    }  # fmt: skip


async def list_channels(call: Call) -> list[dict[str, Any]]:
    """GET /api/channels."""
    return [await _channel(call, spec) for spec in call.api.app.vc.channels]


async def get_channel(call: Call) -> dict[str, Any]:
    """GET /api/channels/{name}."""
    return await _channel(call, _spec(call, call.params["name"]))


def _action(verb: str, wanted: tuple[str, ...], method: str) -> Any:
    async def act(call: Call) -> dict[str, Any]:
        name = call.params["name"]
        spec = _spec(call, name)
        state = _state(call, name)
        if state == "disabled":
            raise ApiError(409, f"channel {name!r} is disabled in the config")
        if state not in wanted:
            await call.audit(f"channel.{verb}", target=f"channel/{name}", outcome="failure", detail={"state": state})
            raise ApiError(409, f"channel {name!r} is {state}: cannot {verb}")
        await defer.maybeDeferred(getattr(call.api.app.services[name], method))
        await call.audit(f"channel.{verb}", target=f"channel/{name}", detail={"was": state})
        return await _channel(call, spec)

    act.__doc__ = f"POST /api/channels/{{name}}/{verb}."
    return act


def _queue_of(call: Call) -> tuple[str, str, Any]:
    channel, dest = call.params["channel"], call.params["destination"]
    service = call.api.app.services.get(channel)
    if service is None or dest not in service.queues:
        raise ApiError(404, f"no running queue {channel}/{dest}")
    return channel, dest, service.queues[dest]


async def list_queues(call: Call) -> list[dict[str, Any]]:
    """GET /api/queues: every destination queue of the enabled channels."""
    out = []
    for name, service in call.api.app.services.items():
        for dest, queue in service.queues.items():
            out.append(await _queue(call, name, dest, queue))
    return out


async def retry_queue(call: Call) -> dict[str, Any]:
    """POST /api/queues/{channel}/{destination}/retry: send the head now instead of after its backoff."""
    channel, dest, queue = _queue_of(call)
    waiting = queue.retry_now()
    await call.audit("queue.retry", target=f"queue/{channel}/{dest}", detail={"was_waiting": waiting})
    return {**await _queue(call, channel, dest, queue), "retried": waiting}


async def skip_queue(call: Call) -> dict[str, Any]:
    """POST /api/queues/{channel}/{destination}/skip: set the waiting head delivery to ERROR and move on."""
    channel, dest, queue = _queue_of(call)
    reason = f"skipped to ERROR by {call.user['username']} (admin API)"
    try:
        skipped = await queue.skip_head(reason, call.body().get("delivery_id"))
    except SkipRefused as exc:
        raise ApiError(409, str(exc)) from None
    await call.audit("queue.skip", target=f"queue/{channel}/{dest}", detail={"delivery_id": skipped})
    return {**await _queue(call, channel, dest, queue), "skipped": skipped}


def routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("GET", "/api/channels", list_channels, VIEWER),
        Route("GET", "/api/channels/{name}", get_channel, VIEWER),
        Route("POST", "/api/channels/{name}/start", _action("start", ("stopped",), "startService"), OPERATOR),
        Route("POST", "/api/channels/{name}/stop", _action("stop", ("running", "paused"), "stopService"), OPERATOR),
        Route("POST", "/api/channels/{name}/pause", _action("pause", ("running",), "pause"), OPERATOR),
        Route("POST", "/api/channels/{name}/resume", _action("resume", ("paused",), "resume"), OPERATOR),
        Route("GET", "/api/queues", list_queues, VIEWER),
        Route("POST", "/api/queues/{channel}/{destination}/retry", retry_queue, OPERATOR),
        Route("POST", "/api/queues/{channel}/{destination}/skip", skip_queue, OPERATOR),
    ]
