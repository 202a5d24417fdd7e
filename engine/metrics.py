"""All Prometheus metrics, on an engine-owned registry, as small verbs (DESIGN.md §3.9)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

QueueProbe = Callable[[], tuple[int, float | None]]


class _QueueCollector:
    """Reads queue depth and oldest age from the live queues at scrape time."""

    def __init__(self) -> None:
        self.probes: dict[tuple[str, str], QueueProbe] = {}

    def collect(self):  # noqa: D102 - prometheus-client protocol
        depth = GaugeMetricFamily(
            "radbridge_queue_depth", "Deliveries waiting in a destination queue", labels=["channel", "destination"]
        )
        age = GaugeMetricFamily(
            "radbridge_queue_oldest_age_seconds",
            "Age of the oldest delivery waiting in a destination queue",
            labels=["channel", "destination"],
        )
        now = time.time()
        for (channel, dest), probe in sorted(self.probes.items()):
            n, oldest = probe()
            depth.add_metric([channel, dest], n)
            age.add_metric([channel, dest], max(0.0, now - oldest) if oldest else 0.0)
        yield depth
        yield age


class Metrics:
    """The engine's metrics; components call the verbs, never prometheus-client directly."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._received = Counter("radbridge_messages_received_total", "Messages received", ["channel"], registry=r)
        self._filtered = Counter("radbridge_messages_filtered_total", "Messages filtered out", ["channel"], registry=r)
        self._duplicates = Counter(
            "radbridge_messages_duplicate_total",
            "Duplicate MSH-10 recognised and not delivered",
            ["channel"],
            registry=r,
        )
        self._errors = Counter(
            "radbridge_messages_errored_total", "Messages that failed, by stage", ["channel", "stage"], registry=r
        )
        self._sent = Counter(
            "radbridge_messages_sent_total", "Deliveries completed", ["channel", "destination"], registry=r
        )
        self._delivery_errors = Counter(
            "radbridge_delivery_failures_total",
            "Failed delivery attempts (retried or final)",
            ["channel", "destination", "final"],
            registry=r,
        )
        self._processing = Histogram(
            "radbridge_processing_seconds",
            "Time from a message's arrival to its answer (store commit included)",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._delivery_latency = Histogram(
            "radbridge_delivery_seconds",
            "Time of one delivery attempt, request to response",
            ["channel", "destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._acks_sent = Counter("radbridge_acks_sent_total", "ACKs sent by code", ["channel", "code"], registry=r)
        self._acks_received = Counter(
            "radbridge_acks_received_total", "ACKs received by code", ["channel", "destination", "code"], registry=r
        )
        self._framing = Counter(
            "radbridge_mllp_framing_errors_total", "MLLP framing problems", ["channel", "kind"], registry=r
        )
        self._connections = Gauge(
            "radbridge_connections_open", "Open inbound connections", ["channel", "connector"], registry=r
        )
        self._children: dict[tuple, object] = {}
        self._queues = _QueueCollector()
        r.register(self._queues)

    def _child(self, metric: object, *labels: str) -> object:
        """The labelled child, looked up once (``labels()`` costs several µs per call)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def received(self, channel: str) -> None:
        """One message arrived."""
        self._child(self._received, channel).inc()

    def filtered(self, channel: str) -> None:
        """One message was filtered out."""
        self._child(self._filtered, channel).inc()

    def duplicate(self, channel: str) -> None:
        """One duplicate was recognised."""
        self._child(self._duplicates, channel).inc()

    def errored(self, channel: str, stage: str) -> None:
        """One message failed at *stage* (charset, parse, filter, transform, store, delivery, framing)."""
        self._child(self._errors, channel, stage).inc()

    def sent(self, channel: str, destination: str) -> None:
        """One delivery completed."""
        self._child(self._sent, channel, destination).inc()

    def delivery_failed(self, channel: str, destination: str, final: bool) -> None:
        """One delivery attempt failed."""
        self._child(self._delivery_errors, channel, destination, "true" if final else "false").inc()

    def processed(self, channel: str, seconds: float) -> None:
        """Observe arrival→answer latency."""
        self._child(self._processing, channel).observe(seconds)

    def delivery_time(self, channel: str, destination: str, seconds: float) -> None:
        """Observe one delivery round trip."""
        self._child(self._delivery_latency, channel, destination).observe(seconds)

    def ack_sent(self, channel: str, code: str) -> None:
        """An ACK with MSA-1 *code* went back to a sender."""
        self._child(self._acks_sent, channel, code).inc()

    def ack_received(self, channel: str, destination: str, code: str) -> None:
        """A downstream answered with *code*."""
        self._child(self._acks_received, channel, destination, code).inc()

    def framing_error(self, channel: str, kind: str) -> None:
        """An MLLP framing problem (junk, oversize, timeout)."""
        self._child(self._framing, channel, kind).inc()

    def connection_opened(self, channel: str, connector: str) -> None:
        """An inbound connection opened."""
        self._child(self._connections, channel, connector).inc()

    def connection_closed(self, channel: str, connector: str) -> None:
        """An inbound connection closed."""
        self._child(self._connections, channel, connector).dec()

    def watch_queue(self, channel: str, destination: str, probe: QueueProbe) -> None:
        """Report a queue's depth and oldest age from *probe* at every scrape."""
        self._queues.probes[(channel, destination)] = probe

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
