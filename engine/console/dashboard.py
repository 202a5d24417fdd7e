"""The dashboard's numbers: per-channel counters from the admin API's channel list, peers from the metrics."""

from __future__ import annotations

from typing import Any

from engine.store.schema import ERROR, FILTERED, QUEUED, SENT

LISTENER_UP, DICOM_PEER_UP = "radbridge_listener_up", "radbridge_dicom_peer_up"


def gauges(metrics: Any, name: str) -> dict[tuple[str, str], float]:
    """``(first label, second label) -> value`` of one gauge family of the engine's registry (empty if absent)."""
    out: dict[tuple[str, str], float] = {}
    registry = getattr(metrics, "registry", None)
    if registry is None:
        return out
    for family in registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            labels = list(sample.labels.values())
            if len(labels) >= 2:
                out[(labels[0], labels[1])] = sample.value
    return out


def counters(channel: dict[str, Any]) -> dict[str, int]:
    """received (every stored message), filtered, queued, sent (deliveries) and errored (messages + deliveries)."""
    msgs, dels = channel["counters"]["messages"], channel["counters"]["deliveries"]
    return {
        "received": sum(msgs.values()),
        "filtered": msgs.get(FILTERED, 0),
        "queued": dels.get(QUEUED, 0),
        "sent": dels.get(SENT, 0),
        "errored": msgs.get(ERROR, 0) + dels.get(ERROR, 0),
    }


def peer_state(channel: str, queue: dict[str, Any], echo: dict[tuple[str, str], float]) -> str:
    """``up``/``down`` from a DICOM destination's last C-ECHO, else ``down`` while a failed send waits to retry."""
    key = (channel, queue["destination"])
    if key in echo:
        return "up" if echo[key] else "down"
    if queue["waiting_retry"]:
        return "down"
    return "up" if queue["running"] else "stopped"


def listener_state(channel: dict[str, Any], listening: dict[tuple[str, str], float]) -> str:
    """``up``/``down`` of the channel's source as its ``radbridge_listener_up`` gauge says (``-`` when unknown)."""
    value = listening.get((channel["name"], channel["source"]))
    return "-" if value is None else ("up" if value else "down")


def rows(channels: list[dict[str, Any]], metrics: Any) -> list[dict[str, Any]]:
    """One dashboard row per channel: state, counters, source up/down, and per destination depth, age, peer."""
    listening, echo = gauges(metrics, LISTENER_UP), gauges(metrics, DICOM_PEER_UP)
    out = []
    for ch in channels:
        queues = [{**q, "peer": peer_state(ch["name"], q, echo)} for q in ch["queues"]]
        out.append({**ch, "totals": counters(ch), "listener": listener_state(ch, listening), "queues": queues})
    return out
