"""Tests for the Jinja transformer step."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.hl7.message import HL7Message
from mappings.environment import compile_template, load_template, make_environment
from mappings.transformer import JinjaTransformer, Transformer, TransformError, normalise_hl7

ORM = (
    "MSH|^~\\&|HIS|HOSP|RIS|RAD|20240131123045||ORM^O01|CTRL1|P|2.3.1\r"
    "PID|1||123^^^HOSP||DOE^JOHN^Q^JR^DR||19700101|M\r"
    "ORC|NW|PL1\r"
    "OBR|1|PL1||CT^CT HEAD"
)


def transformer(source: str, output: str = "hl7") -> JinjaTransformer:
    """A JinjaTransformer for inline *source*."""
    return JinjaTransformer(compile_template(make_environment(), source, name="t.j2"), output)  # type: ignore[arg-type]


def test_hl7_output_joins_lines_with_cr() -> None:
    """Rendered lines become CR-separated segments, blank lines dropped, LF/CRLF converted."""
    source = "MSH|^~\\&|RIS\n\nPID|||{{ msg['PID-3.1'] }}\r\n{% if false %}\nZZZ|never\n{% endif %}\nPV1|1|O  \n\n"
    result = transformer(source).transform(HL7Message(ORM), {"channel": "orders"})
    assert result == "MSH|^~\\&|RIS\rPID|||123\rPV1|1|O"


def test_hl7_output_keeps_inner_content() -> None:
    """Trailing spaces inside a segment that is not the last are kept."""
    assert normalise_hl7("A|x  \nB|y") == "A|x  \rB|y"


def test_hl7_output_drops_whitespace_only_lines() -> None:
    """Lines with only spaces do not become segments."""
    assert normalise_hl7("A\n   \r\nB\r\r") == "A\rB"


@pytest.mark.parametrize("output", ["hl7", "text"])
def test_empty_render_filters_message_out(output: str) -> None:
    """A template that renders nothing (or only whitespace) returns None."""
    source = "{% if msg['ORC-1'] == 'CA' %}\nMSH|x\n{% endif %}\n  \n"
    assert transformer(source, output).transform(HL7Message(ORM), {"channel": "c"}) is None


def test_text_output_is_returned_as_is() -> None:
    """Text output keeps LF and surrounding whitespace."""
    source = '{"accession": "{{ msg[\'OBR-2\'] }}",\n "name": "{{ msg[\'PID-5\']|hl7_name_to_dicom }}"}\n'
    result = transformer(source, "text").transform(HL7Message(ORM), {"channel": "c"})
    assert result == '{"accession": "PL1",\n "name": "DOE^JOHN^Q^DR^JR"}'


def test_context_variables_are_visible() -> None:
    """Templates see msg, raw, channel and every key of the context."""
    source = "{{ channel }}|{{ raw[:3] }}|{{ msg.control_id }}|{{ station }}"
    result = transformer(source, "text").transform(HL7Message(ORM), {"channel": "orders", "station": "CT1"})
    assert result == "orders|MSH|CTRL1|CT1"


def test_msg_and_raw_cannot_be_shadowed_by_context() -> None:
    """The message itself wins over context keys of the same name."""
    result = transformer("{{ msg['MSH-10'] }} {{ raw[:3] }}", "text").transform(
        HL7Message(ORM), {"channel": "c", "msg": "other", "raw": "xyz"}
    )
    assert result == "CTRL1 MSH"


def test_missing_channel_reads_empty() -> None:
    """Without a channel in the context, channel renders empty."""
    assert transformer("[{{ channel }}]", "text").transform(HL7Message(ORM), {}) == "[]"


def test_render_error_is_wrapped_with_line() -> None:
    """An undefined variable while rendering raises TransformError naming the template and line."""
    source = "MSH|x\nPID|{{ msg['PID-3'] }}\nOBR|{{ accession_number }}\n"
    with pytest.raises(TransformError, match="accession_number") as info:
        transformer(source).transform(HL7Message(ORM), {"channel": "c"})
    assert info.value.lineno == 3 and info.value.filename == "t.j2"
    assert str(info.value).startswith("t.j2:3: UndefinedError")


def test_sandbox_violation_is_a_transform_error() -> None:
    """A sandbox violation during rendering is reported as TransformError."""
    with pytest.raises(TransformError, match="SecurityError"):
        transformer("{{ msg.__class__ }}").transform(HL7Message(ORM), {"channel": "c"})


def test_transformer_from_file(tmp_path: Path) -> None:
    """A template loaded from a file renders and reports errors with the file path."""
    (tmp_path / "ack.j2").write_text("MSH|^~\\&|RIS\nMSA|AA|{{ msg['MSH-10'] }}\nERR|{{ missing }}\n")
    template = load_template(make_environment([str(tmp_path)]), "ack.j2")
    with pytest.raises(TransformError) as info:
        JinjaTransformer(template).transform(HL7Message(ORM), {"channel": "c"})
    assert info.value.lineno == 3 and str(info.value).startswith(str(tmp_path / "ack.j2") + ":3:")


def test_rejects_unknown_output() -> None:
    """Only 'hl7' and 'text' outputs exist."""
    with pytest.raises(ValueError, match="output"):
        transformer("x", "json")


def test_jinja_transformer_satisfies_protocol() -> None:
    """JinjaTransformer is a Transformer."""
    assert isinstance(transformer("x"), Transformer)
