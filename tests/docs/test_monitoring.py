"""docs/grafana/radbridge.json and docs/prometheus/alerts.yml: well formed, and only metrics the engine exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import Metrics, RisCounts
from tests.docs.promql import PromQLError, check, expand_grafana

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "radbridge.json"
ALERTS = ROOT / "docs" / "prometheus" / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
PROMETHEUS_OWN = {"up": {"instance", "job"}}  # series Prometheus makes itself for every target
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series
# One call of every public verb of Metrics (a new verb must be added here, and so reaches the checks below).
CALLS: dict[str, tuple[Any, ...]] = {
    "received": ("c",), "filtered": ("c",), "duplicate": ("c",), "errored": ("c", "parse"), "sent": ("c", "d"),
    "delivery_failed": ("c", "d", True), "processed": ("c", 0.01), "delivery_time": ("c", "d", 0.01),
    "ack_sent": ("c", "AA"), "ack_received": ("c", "d", "AA"), "framing_error": ("c", "junk"),
    "connection_opened": ("c", "mllp_listener"), "connection_closed": ("c", "mllp_listener"),
    "association": ("c", "accepted"), "instance_stored": ("c", 1000, 0.01), "instance_failed": ("c", "store"),
    "dimse_request": ("c", "C-ECHO", "success"), "peer_up": ("c", "d", True),
    "listener_up": ("c", "mllp_listener", True), "ris_count_failed": (),
    "watch_queue": ("c", "d", lambda: (1, time.time() - 5)),
    "watch_ris": (lambda: RisCounts({"SCHEDULED": 1}, {"SCHEDULED": 1}, 1, time.time()),),
}  # fmt: skip


def exported() -> tuple[dict[str, set[str]], list[set[str]]]:
    """Sample name → label names of an engine Metrics after every verb ran once; and the families' sample names."""
    m = Metrics()
    for verb, args in CALLS.items():
        getattr(m, verb)(*args)
    names: dict[str, set[str]] = {}
    families = []
    for family in text_string_to_metric_families(m.exposition().decode()):
        family_names = set()
        for s in family.samples:
            names.setdefault(s.name, set()).update(s.labels)
            family_names.add(s.name)
        families.append(family_names)
    return names, families


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def data_panels() -> list[dict[str, Any]]:
    """The dashboard's panels that query (rows left out, panels inside collapsed rows included)."""
    out = []
    for panel in dashboard()["panels"]:
        out += [panel] if panel["type"] != "row" else panel.get("panels", [])
    return out


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard, template variable queries included."""
    exprs = [t["expr"] for p in data_panels() for t in p["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.fullmatch(r"label_values\((.+), *\w+\)", var["query"]["query"]).group(1))
    return exprs


def check_names(expr: str, names: dict[str, set[str]]) -> set[str]:
    """Fail unless every metric of *expr* is exported and every label it names is one of theirs; its metrics."""
    used = check(expr)
    known = {**names, **PROMETHEUS_OWN}
    missing = used.metrics - set(known)
    assert not missing, f"{expr!r} uses metrics the engine does not export: {sorted(missing)}"
    labels = set().union(*(known[name] for name in used.metrics)) | TARGET_LABELS
    assert used.labels <= labels, f"{expr!r} uses labels its metrics lack: {sorted(used.labels - labels)}"
    return used.metrics


def test_every_metric_verb_is_exercised() -> None:
    """CALLS names each public Metrics verb, so a new metric is always part of the name checks."""
    public = {n for n in dir(Metrics) if not n.startswith("_") and callable(getattr(Metrics, n))}
    assert set(CALLS) == public - {"exposition"}


def test_checker_rejects_what_it_should() -> None:
    """The structural checker catches unbalanced brackets, unknown functions, bad matchers and unknown metrics."""
    names, _ = exported()
    for bad in ("sum(rate(radbridge_messages_received_total[5m])", "rates(radbridge_messages_received_total[5m])",
                "radbridge_messages_received_total{channel=in}", "sum by (channel (radbridge_queue_depth)"):  # fmt: skip
        with pytest.raises(PromQLError):
            check(bad)
    with pytest.raises(AssertionError, match="does not export"):
        check_names("rate(radbridge_messages_recieved_total[5m])", names)
    with pytest.raises(AssertionError, match="labels its metrics lack"):
        check_names("sum by (dest) (radbridge_queue_depth)", names)


def test_dashboard_structure() -> None:
    """Importable shape: schemaVersion, datasource and channel variables, unique ids, a datasource and targets."""
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    channel = variables["channel"]
    assert channel["type"] == "query" and channel["datasource"]["uid"] == "${datasource}"
    assert channel["query"]["query"] == "label_values(radbridge_messages_received_total, channel)"
    ids = [p["id"] for p in d["panels"]] + [p["id"] for p in data_panels() if p not in d["panels"]]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    for p in data_panels():
        assert p["title"] and p["type"] in {"timeseries", "stat", "bargauge", "gauge", "table"}, p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        assert all(t["expr"].strip() for t in p["targets"]), p["title"]
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]


def test_dashboard_uses_only_exported_metrics_and_covers_them_all() -> None:
    """Every metric a panel queries is exported, and every exported family is on some panel."""
    names, families = exported()
    used: set[str] = set()
    for expr in dashboard_exprs():
        used |= check_names(expr, names)
    uncovered = [sorted(f) for f in families if not f & used]
    assert not uncovered, f"exported but on no panel: {uncovered}"


def test_dashboard_covers_the_issue_topics() -> None:
    """Throughput, errors, queues, latency percentiles, DICOM, peers, listeners and RIS states have panels."""
    exprs = "\n".join(dashboard_exprs())
    for q in ("0.5", "0.95", "0.99"):
        for hist in ("radbridge_processing_seconds", "radbridge_delivery_seconds", "radbridge_dicom_store_seconds"):
            assert re.search(rf"histogram_quantile\({q}, sum by \(le[^)]*\) \(rate\({hist}_bucket", exprs), (q, hist)
    for panel_channel in ("radbridge_messages_received_total", "radbridge_queue_depth", "radbridge_listener_up"):
        assert re.search(rf'{panel_channel}\{{channel=~"\$channel"', exprs), panel_channel


def test_alert_rules_structure() -> None:
    """Each rule has a name, expression, ``for``, a severity and summary/description naming labels that exist."""
    names, _ = exported()
    rules = alert_rules()
    assert {
        "RadbridgeQueueOldestAgeHigh",
        "RadbridgeErrorRateHigh",
        "RadbridgeDicomPeerDown",
        "RadbridgeDestinationPeerDown",
        "RadbridgeListenerDown",
        "RadbridgeDown",
    } <= {r["alert"] for r in rules}
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        metrics = check_names(rule["expr"], names)
        labels = set().union(*({**names, **PROMETHEUS_OWN}[m] for m in metrics)) | TARGET_LABELS
        for text in rule["annotations"].values():
            templated = set(re.findall(r"\$labels\.(\w+)", text))
            assert templated <= labels, f"{rule['alert']}: {sorted(templated - labels)} not labels of its series"
            assert text.count("{{") == text.count("}}"), rule["alert"]


def promtool() -> str:
    """The promtool binary; fails if it is missing, unless RADBRIDGE_PROMTOOL_OPTIONAL=1 accepts the checks above."""
    path = os.environ.get("RADBRIDGE_PROMTOOL") or shutil.which("promtool")
    if path:
        return path
    if os.environ.get("RADBRIDGE_PROMTOOL_OPTIONAL") == "1":
        pytest.skip("promtool not installed; RADBRIDGE_PROMTOOL_OPTIONAL=1: structural checks only")
    pytest.fail("promtool not found (from Debian's prometheus package: see docs/monitoring.md); "
                "set RADBRIDGE_PROMTOOL_OPTIONAL=1 to accept the structural checks instead", pytrace=False)  # fmt: skip


def run(*args: str) -> None:
    """Run promtool, failing with its output when it does not succeed."""
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_rules() -> None:
    """``promtool check rules`` accepts docs/prometheus/alerts.yml."""
    run("check", "rules", str(ALERTS))


def test_promtool_alert_unit_tests() -> None:
    """The alerts fire (and stay quiet) as tests/docs/alerts_test.yml expects, annotations included."""
    run("test", "rules", str(ALERT_TESTS))


def test_promtool_parses_every_dashboard_expression(tmp_path: Path) -> None:
    """Prometheus's own parser accepts each dashboard query (Grafana macros replaced), checked as recording rules."""
    rules = [{"record": f"radbridge:dashboard_{i}", "expr": expand_grafana(e)} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    run("check", "rules", str(path))
