"""All Prometheus metrics, on an engine-owned registry, as small verbs (DESIGN.md §3.9).

The hot path counts into plain dicts keyed by label tuples; prometheus-client builds the
metric families from them when ``/metrics`` is scraped (a custom collector). A
``Counter.labels(...).inc()`` costs several µs per call (a lock and four Python frames),
which at eight calls per message was ~5 % of the engine's CPU. The verbs must be called
from the reactor thread, except the DICOM verbs, which pynetdicom's handler threads call and
which take a lock.

Scrape-time values come from probes the components register: queue depth/age from each queue
(``watch_queue``) and the RIS counts from the RIS (``watch_ris``, read by ``ris_core.metrics``).
A probe that raises is logged and left out of that scrape; it never fails the scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger("radbridge.metrics")


@dataclass(frozen=True)
class RisCounts:
    """The RIS's counts at one moment: orders by state, worklist steps by status, unmatched studies."""

    orders: dict[str, int]
    steps: dict[str, int]
    unmatched_studies: int
    read_at: float  # time.time() of the read


QueueProbe = Callable[[], tuple[int, float | None]]
RisProbe = Callable[[], RisCounts | None]


class CounterSet:
    """One labelled counter (or gauge): label values → number."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], *, gauge: bool = False) -> None:
        self.name, self.documentation, self.labels, self.gauge = name, documentation, labels, gauge
        self.values: defaultdict[tuple[str, ...], float] = defaultdict(float)

    def family(self) -> Metric:
        """The metric family for one scrape."""
        cls = GaugeMetricFamily if self.gauge else CounterMetricFamily
        fam = cls(self.name, self.documentation, labels=self.labels)
        for key, value in sorted(self.values.items()):
            fam.add_metric(list(key), value)
        return fam


class HistogramSet:
    """One labelled histogram with fixed buckets (``le`` inclusive, as Prometheus counts)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.bounds = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], list[float]] = {}  # per bucket counts (not cumulative) + [sum]

    def observe(self, key: tuple[str, ...], value: float) -> None:
        """Count *value* in its bucket."""
        cells = self.series.get(key)
        if cells is None:
            cells = self.series[key] = [0.0] * (len(self.bounds) + 2)
        cells[bisect_left(self.bounds, value)] += 1
        cells[-1] += value

    def family(self) -> Metric:
        """The metric family for one scrape (cumulative buckets, +Inf, sum)."""
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for key, cells in sorted(self.series.items()):
            running, buckets = 0.0, []
            for edge, count in zip(edges, cells[:-1]):
                running += count
                buckets.append((edge, running))
            fam.add_metric(list(key), buckets, cells[-1])
        return fam


class _Collector:
    """Hands prometheus-client the families, and the values read from probes at scrape time."""

    def __init__(self, metrics: list[CounterSet | HistogramSet]) -> None:
        self.metrics = metrics
        self.probes: dict[tuple[str, str], QueueProbe] = {}
        self.ris: RisProbe | None = None

    def collect(self) -> Iterator[Metric]:  # noqa: D102 - prometheus-client protocol
        now = time.time()
        probed = [*self._queues(now), *self._ris(now)]  # first: a probe may count (a failed RIS read)
        for metric in self.metrics:
            yield metric.family()
        yield from probed

    def _queues(self, now: float) -> Iterator[Metric]:
        labels = ["channel", "destination"]
        depth = GaugeMetricFamily("radbridge_queue_depth", "Deliveries waiting in a destination queue", labels=labels)
        age = GaugeMetricFamily(
            "radbridge_queue_oldest_age_seconds",
            "Age of the oldest delivery waiting in a destination queue",
            labels=labels,
        )
        for (channel, dest), probe in sorted(self.probes.items()):
            try:
                n, oldest = probe()
            except Exception:  # noqa: BLE001 - a broken probe must not fail the scrape
                log.exception("queue probe %s/%s failed", channel, dest)
                continue
            depth.add_metric([channel, dest], n)
            age.add_metric([channel, dest], max(0.0, now - oldest) if oldest else 0.0)
        yield depth
        yield age

    def _ris(self, now: float) -> Iterator[Metric]:
        if self.ris is None:
            return
        try:
            counts = self.ris()
        except Exception:  # noqa: BLE001 - a broken probe must not fail the scrape
            log.exception("RIS metrics probe failed")
            counts = None
        orders = GaugeMetricFamily("radbridge_ris_orders", "RIS orders by state", labels=["state"])
        steps = GaugeMetricFamily(
            "radbridge_ris_worklist_steps", "Scheduled procedure steps by DICOM SPS status", labels=["status"]
        )
        unmatched = GaugeMetricFamily(
            "radbridge_ris_unmatched_studies", "Studies in the archive that match no order (reconciliation list)"
        )
        age = GaugeMetricFamily(
            "radbridge_ris_counts_age_seconds", "Seconds since the RIS counts were read from the store"
        )
        if counts is not None:
            for state, n in sorted(counts.orders.items()):
                orders.add_metric([state], n)
            for status, n in sorted(counts.steps.items()):
                steps.add_metric([status], n)
            unmatched.add_metric([], counts.unmatched_studies)
            age.add_metric([], max(0.0, now - counts.read_at))
        yield from (orders, steps, unmatched, age)


class Metrics:
    """The engine's metrics; components call the verbs, never prometheus-client directly."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ch, dest = ("channel",), ("channel", "destination")
        self._received = CounterSet("radbridge_messages_received_total", "Messages received", ch)
        self._filtered = CounterSet("radbridge_messages_filtered_total", "Messages filtered out", ch)
        self._duplicates = CounterSet(
            "radbridge_messages_duplicate_total", "Duplicate MSH-10 recognised and not delivered", ch
        )
        self._errors = CounterSet("radbridge_messages_errored_total", "Messages that failed, by stage", (*ch, "stage"))
        self._sent = CounterSet("radbridge_messages_sent_total", "Deliveries completed", dest)
        self._delivery_errors = CounterSet(
            "radbridge_delivery_failures_total", "Failed delivery attempts (retried or final)", (*dest, "final")
        )
        self._processing = HistogramSet(
            "radbridge_processing_seconds",
            "Time from a message's arrival to its answer (store commit included)",
            ch,
            LATENCY_BUCKETS,
        )
        self._delivery_latency = HistogramSet(
            "radbridge_delivery_seconds", "Time of one delivery attempt, request to response", dest, LATENCY_BUCKETS
        )
        self._acks_sent = CounterSet("radbridge_acks_sent_total", "ACKs sent by code", (*ch, "code"))
        self._acks_received = CounterSet("radbridge_acks_received_total", "ACKs received by code", (*dest, "code"))
        self._framing = CounterSet("radbridge_mllp_framing_errors_total", "MLLP framing problems", (*ch, "kind"))
        self._connections = CounterSet(
            "radbridge_connections_open", "Open inbound connections", (*ch, "connector"), gauge=True
        )
        # DICOM: called from pynetdicom's handler threads, so these verbs take a lock.
        self._lock = threading.Lock()
        self._associations = CounterSet(
            "radbridge_dicom_associations_total", "DICOM associations by outcome", (*ch, "outcome")
        )
        self._stored = CounterSet("radbridge_dicom_instances_stored_total", "DICOM instances stored", ch)
        self._stored_bytes = CounterSet("radbridge_dicom_stored_bytes_total", "Bytes of DICOM instances stored", ch)
        self._store_failed = CounterSet(
            "radbridge_dicom_instances_failed_total", "DICOM instances refused or failed, by reason", (*ch, "reason")
        )
        self._store_latency = HistogramSet(
            "radbridge_dicom_store_seconds",
            "Time from a complete C-STORE dataset to its response (archive and index included)",
            ch,
            LATENCY_BUCKETS,
        )
        self._dimse = CounterSet(
            "radbridge_dicom_requests_total",
            "DIMSE requests served, by service and status class",
            (*ch, "service", "status"),
        )
        self._peer_up = CounterSet(
            "radbridge_dicom_peer_up", "1 when the last C-ECHO to a DICOM destination succeeded", dest, gauge=True
        )
        self._listeners = CounterSet(
            "radbridge_listener_up",
            "1 while a channel's source listens (or polls), 0 after it stopped or failed to start",
            (*ch, "connector"),
            gauge=True,
        )
        self._ris_failures = CounterSet(
            "radbridge_ris_count_failures_total", "Reads of the RIS counts that failed (the last counts are kept)", ()
        )
        self._collector = _Collector(
            [
                self._received, self._filtered, self._duplicates, self._errors, self._sent, self._delivery_errors,
                self._processing, self._delivery_latency, self._acks_sent, self._acks_received, self._framing,
                self._connections, self._associations, self._stored, self._stored_bytes, self._store_failed,
                self._store_latency, self._dimse, self._peer_up, self._listeners, self._ris_failures,
            ]
        )  # fmt: skip
        self.registry.register(self._collector)

    def received(self, channel: str) -> None:
        """One message arrived."""
        self._received.values[(channel,)] += 1

    def filtered(self, channel: str) -> None:
        """One message was filtered out."""
        self._filtered.values[(channel,)] += 1

    def duplicate(self, channel: str) -> None:
        """One duplicate was recognised."""
        self._duplicates.values[(channel,)] += 1

    def errored(self, channel: str, stage: str) -> None:
        """One message failed at *stage* (charset, parse, filter, transform, store, delivery, framing)."""
        self._errors.values[(channel, stage)] += 1

    def sent(self, channel: str, destination: str) -> None:
        """One delivery completed."""
        self._sent.values[(channel, destination)] += 1

    def delivery_failed(self, channel: str, destination: str, final: bool) -> None:
        """One delivery attempt failed."""
        self._delivery_errors.values[(channel, destination, "true" if final else "false")] += 1

    def processed(self, channel: str, seconds: float) -> None:
        """Observe arrival→answer latency."""
        self._processing.observe((channel,), seconds)

    def delivery_time(self, channel: str, destination: str, seconds: float) -> None:
        """Observe one delivery round trip."""
        self._delivery_latency.observe((channel, destination), seconds)

    def ack_sent(self, channel: str, code: str) -> None:
        """An ACK with MSA-1 *code* went back to a sender."""
        self._acks_sent.values[(channel, code)] += 1

    def ack_received(self, channel: str, destination: str, code: str) -> None:
        """A downstream answered with *code*."""
        self._acks_received.values[(channel, destination, code)] += 1

    def framing_error(self, channel: str, kind: str) -> None:
        """An MLLP framing problem (junk, oversize, timeout)."""
        self._framing.values[(channel, kind)] += 1

    def connection_opened(self, channel: str, connector: str) -> None:
        """An inbound connection opened."""
        self._connections.values[(channel, connector)] += 1

    def connection_closed(self, channel: str, connector: str) -> None:
        """An inbound connection closed."""
        self._connections.values[(channel, connector)] -= 1

    # -- DICOM (thread-safe) ------------------------------------------------
    def association(self, channel: str, outcome: str) -> None:
        """A DICOM association was accepted, rejected (``rejected_ae``, ``rejected_address``) or aborted."""
        with self._lock:
            self._associations.values[(channel, outcome)] += 1

    def instance_stored(self, channel: str, size: int, seconds: float) -> None:
        """A DICOM instance is in the archive and indexed."""
        with self._lock:
            self._stored.values[(channel,)] += 1
            self._stored_bytes.values[(channel,)] += size
            self._store_latency.observe((channel,), seconds)

    def instance_failed(self, channel: str, reason: str) -> None:
        """A DICOM instance was refused or could not be stored (``unparseable``, ``duplicate``, ``store`` ...)."""
        with self._lock:
            self._store_failed.values[(channel, reason)] += 1

    def dimse_request(self, channel: str, service: str, status: str) -> None:
        """A DIMSE request (``C-ECHO``, ``C-FIND`` ...) was answered with a status class (success/warning/failure)."""
        with self._lock:
            self._dimse.values[(channel, service, status)] += 1

    def peer_up(self, channel: str, destination: str, up: bool) -> None:
        """Record a DICOM destination's last C-ECHO result."""
        with self._lock:
            self._peer_up.values[(channel, destination)] = 1.0 if up else 0.0

    def listener_up(self, channel: str, connector: str, up: bool) -> None:
        """Record whether *channel*'s source (of type *connector*) is listening."""
        self._listeners.values[(channel, connector)] = 1.0 if up else 0.0

    def ris_count_failed(self) -> None:
        """A read of the RIS counts failed (called from the thread that read)."""
        with self._lock:
            self._ris_failures.values[()] += 1

    def watch_ris(self, probe: RisProbe | None) -> None:
        """Report the RIS counts from *probe* at every scrape (``None``: stop reporting them)."""
        self._collector.ris = probe

    def watch_queue(self, channel: str, destination: str, probe: QueueProbe) -> None:
        """Report a queue's depth and oldest age from *probe* at every scrape."""
        self._collector.probes[(channel, destination)] = probe

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
