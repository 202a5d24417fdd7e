"""``radbridge validate`` warnings: unused destinations, filters that never pass, templates reading excluded fields."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from engine.config.lint import contradiction, lint, template_reads
from engine.config.validate import validate_config
from engine.config.yamlpos import load_yaml
from engine.filters import compile_filter
from engine.hl7.message import HL7Message
from engine.registry import default_registry
from mappings.environment import make_environment

ROOT = Path(__file__).resolve().parents[2]


def _warnings(tmp_path: Path, text: str, **files: str) -> list[str]:
    """Validate *text* as ``config.yaml`` (beside *files*), lint it and format the warnings."""
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    vc = validate_config(path, check_ports=False, environ={})
    _, positions, _ = load_yaml(path, environ={})
    return [w.format().replace(str(tmp_path) + "/", "") for w in lint(vc, positions)]


def _channel(filter_: str, *dests: str, extra: str = "") -> str:
    """A config with one memory channel filtered by *filter_* and the given destination entries."""
    body = "".join(f"      - {d}\n" for d in dests)
    return f"channels:\n  - name: in\n    source: {{type: memory}}\n    filter: '{filter_}'\n{extra}    destinations:\n{body}"


def test_route_contradicting_the_channel_filter(tmp_path: Path) -> None:
    """A route that wants ORM on a channel that admits only ADT is an unused destination, at its filter."""
    text = _channel('MSH-9.1 == "ADT"', "{name: orm, type: memory, filter: 'MSH-9.1 == \"ORM\"'}")
    assert _warnings(tmp_path, text) == [
        "config.yaml:6:43: channels[0].destinations[0].filter: warning: destination 'orm' never receives: its "
        "filter is never true together with the channel filter 'MSH-9.1 == \"ADT\"' (contradiction on MSH-9.1)"
    ]


def test_route_compatible_with_the_channel_filter(tmp_path: Path) -> None:
    """A route selecting one of the admitted types, or any route after a channel transformer, is fine."""
    route = "{name: orm, type: memory, filter: 'MSH-9.1 == \"ORM\"'}"
    assert _warnings(tmp_path, _channel('MSH-9.1 in ["ADT", "ORM"]', route)) == []
    transformer = "    transformer: {template: 'MSH|^~\\&|X||||||ORM^O01'}\n"
    assert _warnings(tmp_path, _channel('MSH-9.1 == "ADT"', route, extra=transformer)) == []


def test_disabled_destination_and_channel(tmp_path: Path) -> None:
    """A disabled destination and the destinations of a disabled channel never receive."""
    text = _channel(
        "exists MSH-10", "{name: live, type: memory, enabled: true}", "{name: paused, type: memory, enabled: false}"
    )
    text += (
        "  - name: old\n    enabled: false\n    source: {type: memory}\n    destinations: [{name: d, type: memory}]\n"
    )
    assert _warnings(tmp_path, text) == [
        "config.yaml:7:47: channels[0].destinations[1].enabled: warning: destination 'paused' is disabled: it never receives",
        "config.yaml:9:14: channels[1].enabled: warning: channel 'old' is disabled: its destinations (d) never receive",
    ]


def test_internal_channel_nothing_feeds(tmp_path: Path) -> None:
    """An internal-source channel is unreachable unless a channel destination or a service section names it."""
    lonely = "  - name: lonely\n    source: {type: internal}\n    destinations: [{name: d, type: memory}]\n"
    assert _warnings(tmp_path, "channels:\n" + lonely) == [
        "config.yaml:3:13: channels[0].source: warning: channel 'lonely' has an internal source no channel "
        "destination or service section feeds: its destinations (d) never receive"
    ]
    feeder = "  - name: in\n    source: {type: memory}\n    destinations: [{name: c, type: channel, channel: lonely}]\n"
    assert _warnings(tmp_path, "channels:\n" + lonely + feeder) == []
    if default_registry().find("service", "ris") is None:
        pytest.skip("the RIS service is not installed")
    assert _warnings(tmp_path, "ris: {status_channel: lonely}\nchannels:\n" + lonely) == []


@pytest.mark.parametrize(
    "expr, path",
    [
        ('PID-3 == "A" and PID-3 == "B"', "PID-3"),
        ('PID-3 in ["A"] and not PID-3 in ["A"]', "PID-3"),
        ("exists PID-3 and PID-3 is empty", "PID-3"),
        ("exists OBX-5.1 and not exists OBX", "OBX, OBX-5.1"),
        ('(PID-3 == "A" or PID-3 == "B") and PID-3 not in ["A", "B"]', "PID-3"),
    ],
)
def test_route_filter_that_can_never_pass(tmp_path: Path, expr: str, path: str) -> None:
    """A route filter contradicting itself is reported once, at the route's filter."""
    text = _channel("exists MSH-10", f"{{name: d, type: memory, filter: '{expr}'}}")
    assert _warnings(tmp_path, text) == [
        f"config.yaml:6:41: channels[0].destinations[0].filter: warning: the filter of destination 'd' can never "
        f"be true (contradiction on {path}), so it never receives"
    ]


@pytest.mark.parametrize(
    "expr",
    ['PID-3 == "A" or PID-3 == "B"', 'PID-3 != "A" and PID-3 != "B"', 'PID-3 startswith "A" and PID-3 startswith "B"'],
)
def test_satisfiable_or_undecided_filters_give_no_warning(tmp_path: Path, expr: str) -> None:
    """Filters that can pass, or that the analysis cannot decide, are never reported."""
    assert _warnings(tmp_path, _channel(expr, "{name: d, type: memory}")) == []


def test_channel_filter_list_that_can_never_pass(tmp_path: Path) -> None:
    """The items of a filter list are ANDed: two different message types can never both hold."""
    text = "channels:\n  - name: in\n    source: {type: memory}\n    filter:\n      - 'MSH-9.1 == \"ADT\"'\n"
    text += "      - 'MSH-9.1 == \"ORM\"'\n    destinations: [{name: d, type: memory}]\n"
    assert _warnings(tmp_path, text) == [
        "config.yaml:5:7: channels[0].filter: warning: the channel filter can never be true (contradiction on "
        "MSH-9.1), so every message is filtered"
    ]


def test_template_reading_an_excluded_field(tmp_path: Path) -> None:
    """A route template reading OBX-5 after a channel filter requiring no OBX is warned at the line reading it."""
    block = "    destinations:\n      - name: d\n        type: memory\n        transformer:\n          template: |\n"
    block += "            MSH|^~\\&|X\n            OBX|1|TX|{{ msg['OBX-5'] }}\n"
    text = _channel("not exists OBX").replace("    destinations:\n", block)
    assert _warnings(tmp_path, text) == [
        "config.yaml:11:13: channels[0].destinations[0].transformer.template: warning: the template reads "
        'msg["OBX-5"] (template line 2) but the channel filter excludes it: it is always empty'
    ]
    assert _warnings(tmp_path, text.replace("not exists OBX", "exists OBX")) == []
    quoted = _channel("not exists OBX", "{name: d, type: memory, transformer: {template: \"X\\n{{ msg['OBX-5'] }}\"}}")
    assert [w.split(" warning")[0] for w in _warnings(tmp_path, quoted)] == [
        "config.yaml:6:57: channels[0].destinations[0].transformer.template:"
    ]


def test_template_file_reading_an_excluded_field(tmp_path: Path) -> None:
    """A channel template file reading PID-3 that the filter empties is warned at its template_file node."""
    extra = "    transformer: {template_file: out.j2}\n"
    text = _channel("PID-3 is empty", "{name: d, type: memory}", extra=extra)
    files = {"out.j2": 'MSH|^~\\&|X\nPID|1||{{ msg.get("PID-3.1") }}\n'}
    assert _warnings(tmp_path, text, **files) == [
        'config.yaml:5:34: channels[0].transformer.template_file: warning: the template reads msg["PID-3.1"] '
        "(template line 2) but the channel filter excludes it: it is always empty"
    ]


def test_template_reads_literal_paths_unless_msg_is_rebound() -> None:
    """Only literal ``msg[...]``/``msg.get(...)`` reads count, and none when the template rebinds ``msg``."""
    env = make_environment()
    source = '{{ msg["PID-3"] }}\n{{ msg.get("OBX-5", "x") }} {{ msg[name] }} {{ other["PV1-2"] }}'
    assert template_reads(env, source) == [("PID-3", 1), ("OBX-5", 2)]
    assert template_reads(env, '{% for msg in items %}{{ msg["PID-3"] }}{% endfor %}') == []


def test_included_channel_warnings_point_into_the_included_file(tmp_path: Path) -> None:
    """A warning about a channel from an included file carries that file's line and column."""
    inc = "channels:\n  - name: in\n    source: {type: memory}\n    destinations: [{name: d, type: memory, enabled: false}]\n"
    assert _warnings(tmp_path, "include: [more.yaml]\n", **{"more.yaml": inc}) == [
        "more.yaml:4:53: channels[0].destinations[0].enabled: warning: destination 'd' is disabled: it never receives"
    ]


def test_example_config_is_clean() -> None:
    """The shipped example config gives no warning."""
    vc = validate_config(ROOT / "config.example.yaml", check_ports=False, environ={})
    _, positions, _ = load_yaml(ROOT / "config.example.yaml", environ={})
    assert lint(vc, positions) == []


def _messages() -> list[HL7Message]:
    """Every combination of a few PID-3 and OBX-5 values, with zero to two OBX segments."""
    out = []
    for pid, count, obx in itertools.product(["", "A", "B", "A^X", "B^A"], range(3), ["", "A", "5"]):
        segments = ["MSH|^~\\&|S|F|R|F|20240101||ORM^O01|1|P|2.3"] + [f"PID|1||{pid}"] * (pid != "")
        segments += [f"OBX|{i + 1}|TX||{obx}" for i in range(count)]
        out.append(HL7Message("\r".join(segments)))
    return out


def _random_filter(rng: random.Random, depth: int = 0) -> str:
    if depth < 2 and rng.random() < 0.5:
        return f"({_random_filter(rng, depth + 1)} {rng.choice(['and', 'or'])} {_random_filter(rng, depth + 1)})"
    path, value = rng.choice(["PID-3", "PID-3.1", "PID", "OBX-5", "OBX[2]-5", "OBX"]), rng.choice(["A", "B", "5"])
    atom = rng.choice(
        [f'{path} == "{value}"', f'{path} != "{value}"', f'{path} in ["A", "{value}"]', f"exists {path}"]
        + [f"{path} is empty", f'{path} startswith "{value}"', f"{path} < 5", f'{path} not in ["{value}"]']
    )
    return f"not {atom}" if rng.random() < 0.3 else atom


def test_contradictions_are_sound() -> None:
    """Whenever the analysis calls filters contradictory, no message passes them all (random filters, all messages)."""
    rng, messages, found = random.Random(6), _messages(), 0
    for _ in range(600):
        filters = [compile_filter(_random_filter(rng)) for _ in range(2)]
        nonempty = [rng.choice(["PID-3", "OBX-5", "OBX"])] if rng.random() < 0.3 else []
        if contradiction(filters, nonempty) is None:
            continue
        found += 1
        passing = [m for m in messages if all(f(m) for f in filters) and all(m.get(p) for p in nonempty)]
        assert passing == [], [f.source for f in filters]
    assert found > 50
