"""The engine's metrics: plain counters exported through prometheus-client at scrape time."""

from __future__ import annotations

import random
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import LATENCY_BUCKETS, Metrics, RisCounts


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape, parsed back from the text exposition."""
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_are_exported_with_their_labels() -> None:
    """Each verb counts under its own labels and the exposition names follow Prometheus rules."""
    m = Metrics()
    for _ in range(3):
        m.received("in")
    m.received("other")
    m.errored("in", "parse")
    m.ack_sent("in", "AA")
    m.delivery_failed("in", "out", final=True)
    got = samples(m)
    assert got[("radbridge_messages_received_total", (("channel", "in"),))] == 3
    assert got[("radbridge_messages_received_total", (("channel", "other"),))] == 1
    assert got[("radbridge_messages_errored_total", (("channel", "in"), ("stage", "parse")))] == 1
    assert got[("radbridge_acks_sent_total", (("channel", "in"), ("code", "AA")))] == 1
    key = ("radbridge_delivery_failures_total", (("channel", "in"), ("destination", "out"), ("final", "true")))
    assert got[key] == 1
    assert m.registry.get_sample_value("radbridge_messages_received_total", {"channel": "in"}) == 3


def test_connection_gauge_goes_up_and_down() -> None:
    """connections_open is a gauge."""
    m = Metrics()
    m.connection_opened("in", "mllp_listener")
    m.connection_opened("in", "mllp_listener")
    m.connection_closed("in", "mllp_listener")
    text = m.exposition().decode()
    assert "# TYPE radbridge_connections_open gauge" in text
    assert (
        m.registry.get_sample_value("radbridge_connections_open", {"channel": "in", "connector": "mllp_listener"}) == 1
    )


def test_histogram_matches_prometheus_client() -> None:
    """Buckets, count and sum equal those of prometheus-client's own Histogram for the same values."""
    rng = random.Random(7)
    values = [rng.choice([0.0005, 0.001, 10.0, 11.0]) if i % 5 == 0 else rng.expovariate(300) for i in range(2000)]
    ours = Metrics()
    ref_registry = CollectorRegistry()
    ref = Histogram("ref_seconds", "reference", ["channel"], buckets=LATENCY_BUCKETS, registry=ref_registry)
    for v in values:
        ours.processed("c", v)
        ref.labels("c").observe(v)
    for le in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
        expected = ref_registry.get_sample_value("ref_seconds_bucket", {"channel": "c", "le": le})
        got = ours.registry.get_sample_value("radbridge_processing_seconds_bucket", {"channel": "c", "le": le})
        assert got == expected, le
    assert ours.registry.get_sample_value("radbridge_processing_seconds_count", {"channel": "c"}) == len(values)
    total = ours.registry.get_sample_value("radbridge_processing_seconds_sum", {"channel": "c"})
    assert abs(total - sum(values)) < 1e-9


def test_queue_probe_is_read_at_scrape_time() -> None:
    """Queue depth and oldest age come from the probe when scraped."""
    m = Metrics()
    state = {"depth": 0, "oldest": None}
    m.watch_queue("c", "d", lambda: (state["depth"], state["oldest"]))
    labels = {"channel": "c", "destination": "d"}
    assert m.registry.get_sample_value("radbridge_queue_depth", labels) == 0
    state.update(depth=4, oldest=1.0)
    assert m.registry.get_sample_value("radbridge_queue_depth", labels) == 4
    assert m.registry.get_sample_value("radbridge_queue_oldest_age_seconds", labels) > 1e9


def test_a_failing_probe_does_not_fail_the_scrape() -> None:
    """A queue or RIS probe that raises is left out of that scrape; the other metrics are still exported."""
    m = Metrics()
    m.received("c")

    def broken() -> Any:
        raise RuntimeError("store gone")

    m.watch_queue("c", "bad", broken)
    m.watch_queue("c", "good", lambda: (2, None))
    m.watch_ris(broken)
    got = samples(m)
    assert got[("radbridge_messages_received_total", (("channel", "c"),))] == 1
    assert got[("radbridge_queue_depth", (("channel", "c"), ("destination", "good")))] == 2
    assert not any(labels == (("channel", "c"), ("destination", "bad")) for _, labels in got)
    assert not any(name.startswith("radbridge_ris_") for name, _ in got)


def test_ris_counts_are_exported_from_the_probe() -> None:
    """Orders by state, steps by status, unmatched studies and the age of the counts come from the RIS probe."""
    m = Metrics()
    read_at = time.time() - 30
    m.watch_ris(lambda: RisCounts({"SCHEDULED": 3, "CANCELED": 0}, {"SCHEDULED": 2}, 1, read_at))
    m.ris_count_failed()
    got = samples(m)
    assert got[("radbridge_ris_orders", (("state", "SCHEDULED"),))] == 3
    assert got[("radbridge_ris_orders", (("state", "CANCELED"),))] == 0
    assert got[("radbridge_ris_worklist_steps", (("status", "SCHEDULED"),))] == 2
    assert got[("radbridge_ris_unmatched_studies", ())] == 1
    assert 29 <= got[("radbridge_ris_counts_age_seconds", ())] < 60
    assert got[("radbridge_ris_count_failures_total", ())] == 1
    m.watch_ris(None)
    assert not any(name == "radbridge_ris_orders" for name, _ in samples(m))
