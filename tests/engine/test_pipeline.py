"""Tests for the pure per-message pipeline (engine/pipeline.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.filters import compile_filters
from engine.hl7.message import HL7Message
from engine.pipeline import CompiledChannel, Route, run_pipeline
from engine.store.schema import ERROR, FILTERED, TRANSFORMED
from mappings.environment import compile_template, make_environment
from mappings.transformer import JinjaTransformer
from tests.engine.conftest import orm

ADT = "MSH|^~\\&|HIS|HOSP|RIS|RAD|20240305143000||ADT^A01|A1|P|2.5\rPID|1||P9^^^HOSP||ROE^JANE"


class Upper:
    """Upper-cases the whole message."""

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """The message text, upper-cased."""
        return msg.text.upper()


class Nothing:
    """Always filters the message out of its route."""

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Nothing to send."""
        return None


class Boom:
    """Raises on every message."""

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Fail."""
        raise RuntimeError("kaboom")


class Recording:
    """Records the messages and contexts it sees and returns a fixed payload."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Record the call and return the fixed payload."""
        self.seen.append((msg.text, dict(context)))
        return self.out


def jinja(source: str, output: str = "hl7") -> JinjaTransformer:
    """A JinjaTransformer compiled from *source* in the sandboxed environment."""
    return JinjaTransformer(compile_template(make_environment(), source), output=output)


def test_channel_filter_rejects_with_filter_info() -> None:
    """A message failing the channel filter is FILTERED and filter_info names the failing clause."""
    channel = CompiledChannel("ch", filter=compile_filters('MSH-9.1 == "ADT"'), routes=[Route("out")])
    result = run_pipeline(HL7Message(orm()), channel)
    assert result.status == FILTERED
    assert result.outputs == []
    assert result.filter_info == 'channel filter: MSH-9.1 == "ADT" was false'


def test_channel_filter_list_reports_first_failing_clause() -> None:
    """With a list of channel filters, filter_info names the first one that failed."""
    flt = compile_filters(['MSH-9.1 == "ORM"', 'PID-3.1 == "nobody"'])
    result = run_pipeline(HL7Message(orm()), CompiledChannel("ch", filter=flt, routes=[Route("out")]))
    assert result.status == FILTERED
    assert result.filter_info == 'channel filter: PID-3.1 == "nobody" was false'


def test_passing_message_goes_to_every_unfiltered_route_unchanged() -> None:
    """Without transformers every route gets the inbound text as is."""
    text = orm()
    channel = CompiledChannel("ch", filter=compile_filters('MSH-9.1 == "ORM"'), routes=[Route("a"), Route("b")])
    result = run_pipeline(HL7Message(text), channel)
    assert result.status == TRANSFORMED
    assert result.outputs == [("a", text), ("b", text)]
    assert result.transformed is None
    assert result.filter_info is None


def test_routes_with_different_filters_only_matching_get_output() -> None:
    """Two destinations with different filters: only the one whose filter matches gets an output."""
    channel = CompiledChannel(
        "ch",
        routes=[
            Route("orders", filter=compile_filters('MSH-9.1 == "ORM"')),
            Route("admissions", filter=compile_filters('MSH-9.1 == "ADT"')),
        ],
    )
    orm_result = run_pipeline(HL7Message(orm()), channel)
    assert orm_result.status == TRANSFORMED
    assert [name for name, _ in orm_result.outputs] == ["orders"]
    assert orm_result.filter_info == 'admissions: MSH-9.1 == "ADT" was false'
    adt_result = run_pipeline(HL7Message(ADT), channel)
    assert [name for name, _ in adt_result.outputs] == ["admissions"]


def test_route_transformer_returning_none_skips_that_route() -> None:
    """A route whose transformer returns None gets no output; the other routes still do."""
    channel = CompiledChannel("ch", routes=[Route("skip", transformer=Nothing()), Route("up", transformer=Upper())])
    text = orm()
    result = run_pipeline(HL7Message(text), channel)
    assert result.status == TRANSFORMED
    assert result.outputs == [("up", text.upper())]
    assert result.filter_info == "skip: transformer produced nothing"


def test_all_routes_filtered_is_filtered() -> None:
    """When every route is filtered out (by filter or transformer) the message is FILTERED."""
    channel = CompiledChannel(
        "ch",
        routes=[Route("a", filter=compile_filters('MSH-9.1 == "ADT"')), Route("b", transformer=Nothing())],
    )
    result = run_pipeline(HL7Message(orm()), channel)
    assert result.status == FILTERED
    assert result.outputs == []
    assert result.filter_info == 'a: MSH-9.1 == "ADT" was false; b: transformer produced nothing'


@pytest.mark.parametrize("where", ["channel", "route"])
def test_transformer_raising_is_error_with_stage(where: str) -> None:
    """A raising transformer gives ERROR with stage 'transform' (and the destination name on a route)."""
    if where == "channel":
        channel = CompiledChannel("ch", transformer=Boom(), routes=[Route("out")])
    else:
        channel = CompiledChannel("ch", routes=[Route("fine"), Route("bad", transformer=Boom())])
    result = run_pipeline(HL7Message(orm()), channel)
    assert result.status == ERROR
    assert result.error_stage == "transform"
    assert result.outputs == []
    assert "RuntimeError: kaboom" in result.error
    if where == "route":
        assert result.error.startswith("transform of destination bad failed")
    else:
        assert result.error.startswith("transform failed")


def test_jinja_transformer_error_names_template_line() -> None:
    """A Jinja route transformer hitting an undefined variable gives ERROR naming the destination."""
    channel = CompiledChannel("ch", routes=[Route("tpl", transformer=jinja("MSH|^~\\&\n{{ no_such_variable }}"))])
    result = run_pipeline(HL7Message(orm()), channel)
    assert result.status == ERROR
    assert result.error_stage == "transform"
    assert "destination tpl" in result.error
    assert "no_such_variable" in result.error


def test_no_routes_is_transformed_without_outputs() -> None:
    """A channel with no destinations marks the message TRANSFORMED with no outputs."""
    result = run_pipeline(HL7Message(orm()), CompiledChannel("ch"))
    assert result.status == TRANSFORMED
    assert result.outputs == []
    assert result.filter_info is None


def test_jinja_channel_transformer_feeds_route_filters() -> None:
    """A Jinja channel transformer's output is what route filters see and what routes send."""
    template = (
        "MSH|^~\\&|RB|RAD|{{ msg['MSH-3'] }}|{{ msg['MSH-4'] }}|{{ msg['MSH-7'] }}||ORU^R01|{{ msg['MSH-10'] }}|P|2.5\n"
        "\n"
        "PID|1||{{ msg['PID-3.1'] }}\n"
        "OBR|1|||||||||||||||||{{ msg['OBR-18'] }}"
    )
    channel = CompiledChannel(
        "ch",
        transformer=jinja(template),
        routes=[
            Route("oru", filter=compile_filters('MSH-9.1 == "ORU" and OBR-18 == "ACC7"')),
            Route("orm", filter=compile_filters('MSH-9.1 == "ORM"')),
        ],
    )
    result = run_pipeline(HL7Message(orm(cid="X1", acc="ACC7")), channel)
    assert result.status == TRANSFORMED
    expected = "MSH|^~\\&|RB|RAD|RIS|HOSP|20240305143000||ORU^R01|X1|P|2.5\rPID|1||P1\rOBR|1|||||||||||||||||ACC7"
    assert result.transformed == expected
    assert result.outputs == [("oru", expected)]


def test_route_transformer_gets_context_with_channel() -> None:
    """Route transformers receive the channel name and any extra context keys."""
    rec = Recording("payload")
    channel = CompiledChannel("mychan", routes=[Route("r", transformer=rec)])
    result = run_pipeline(HL7Message(orm()), channel, {"extra": 1})
    assert result.outputs == [("r", "payload")]
    assert rec.seen[0][1] == {"channel": "mychan", "extra": 1}


def test_channel_transformer_returning_nothing_is_filtered() -> None:
    """A channel transformer producing nothing filters the whole message."""
    result = run_pipeline(HL7Message(orm()), CompiledChannel("ch", transformer=Nothing(), routes=[Route("a")]))
    assert result.status == FILTERED
    assert result.filter_info == "channel transformer produced nothing"


def test_route_filter_on_non_hl7_output_is_error() -> None:
    """A route filter cannot read a channel transformer's non-HL7 output: ERROR names the destination."""
    channel = CompiledChannel(
        "ch",
        transformer=jinja("plain text {{ msg['MSH-10'] }}", output="text"),
        routes=[Route("plain"), Route("filtered", filter=compile_filters('MSH-9.1 == "ORM"'))],
    )
    result = run_pipeline(HL7Message(orm()), channel)
    assert result.status == ERROR
    assert "destination filtered" in result.error


def test_jinja_text_output_sent_to_unfiltered_route() -> None:
    """A text-output Jinja channel transformer's rendering goes to unfiltered routes verbatim."""
    channel = CompiledChannel("ch", transformer=jinja("id={{ msg['MSH-10'] }}", output="text"), routes=[Route("p")])
    result = run_pipeline(HL7Message(orm(cid="Z9")), channel)
    assert result.status == TRANSFORMED
    assert result.outputs == [("p", "id=Z9")]
