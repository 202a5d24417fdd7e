"""Tests for the sandboxed Jinja environment and template compilation."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from engine.hl7.message import HL7Message
from mappings.environment import (
    STOCK_TEMPLATES,
    TemplateCompileError,
    compile_template,
    load_template,
    make_environment,
)

ORM = (
    "MSH|^~\\&|HIS|HOSP|RIS|RAD|20240131123045||ORM^O01|CTRL1|P|2.3.1\rPID|1||123^^^HOSP||DOE^JOHN^Q^JR^DR||19700101|M"
)


@pytest.fixture()
def env() -> SandboxedEnvironment:
    """A fresh mapping environment without extra search paths."""
    return make_environment()


def render(env: SandboxedEnvironment, source: str, **variables: object) -> str:
    """Compile and render *source* in *env*."""
    return compile_template(env, source).render(**variables)


def test_environment_is_sandboxed_and_strict(env: SandboxedEnvironment) -> None:
    """The environment is a sandbox with StrictUndefined and no autoescape."""
    assert isinstance(env, SandboxedEnvironment)
    assert env.undefined is jinja2.StrictUndefined
    assert render(env, "{{ v }}", v="<a & b>") == "<a & b>"


def test_filters_and_globals_are_registered(env: SandboxedEnvironment) -> None:
    """Mapping filters and globals are usable from templates."""
    assert render(env, "{{ '20240131123045'|hl7_to_dicom_date }}") == "20240131"
    assert render(env, "{{ hl7_segment('ZZZ', 'a|b') }}") == "ZZZ|a\\F\\b"


def test_msg_accessor_works_in_sandbox(env: SandboxedEnvironment) -> None:
    """msg["PID-5.1"], msg.get and filters on fields work on an HL7Message."""
    source = "{{ msg['PID-5.1'] }}|{{ msg.get('PID-99', 'none') }}|{{ msg['PID-5']|hl7_name_to_dicom }}"
    assert render(env, source, msg=HL7Message(ORM)) == "DOE|none|DOE^JOHN^Q^DR^JR"


def test_msg_bad_path_raises(env: SandboxedEnvironment) -> None:
    """An invalid field path raises instead of rendering empty."""
    with pytest.raises(ValueError, match="invalid HL7 field path"):
        render(env, "{{ msg['PID5'] }}", msg=HL7Message(ORM))


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ msg.__class__.__init__.__globals__ }}",
        "{{ msg._segments }}",
        "{{ msg.get.__func__ }}",
    ],
)
def test_sandbox_blocks_unsafe_attributes(env: SandboxedEnvironment, source: str) -> None:
    """Dunder and private attribute access raises SecurityError."""
    with pytest.raises(SecurityError):
        render(env, source, msg=HL7Message(ORM))


def test_attribute_cache_keeps_the_sandbox_closed(env: SandboxedEnvironment) -> None:
    """After safe attributes were cached, unsafe ones on the same types are still refused and format stays wrapped."""
    warm = "{{ msg.segments[0].split('|')[2] }}{{ msg.get('PID-5.1') }}{{ 'a{}'.format('b') }}"
    for _ in range(3):
        assert render(env, warm, msg=HL7Message(ORM)) == "HISDOEab"
    assert (HL7Message, "segments") in env._safe_attributes  # type: ignore[attr-defined]
    assert (str, "format") not in env._safe_attributes  # type: ignore[attr-defined]
    for source in ("{{ msg.__class__ }}", "{{ msg._segments }}", "{{ '{0.__class__}'.format(msg) }}"):
        with pytest.raises(SecurityError):
            render(env, source, msg=HL7Message(ORM))


def test_attribute_cache_falls_back_to_items(env: SandboxedEnvironment) -> None:
    """A cached (type, name) pair still falls back to item lookup for an object lacking the attribute."""

    class Box(dict):
        """A dict whose instances may carry an attribute."""

    with_attr, without = Box(), Box(value="item")
    with_attr.value = "attr"  # type: ignore[attr-defined]
    assert render(env, "{{ b.value }}", b=with_attr) == "attr"
    assert render(env, "{{ b.value }}", b=without) == "item"


def test_strict_undefined_raises_on_unknown_variable(env: SandboxedEnvironment) -> None:
    """An unknown variable raises UndefinedError instead of rendering empty."""
    with pytest.raises(UndefinedError, match="nope"):
        render(env, "{{ nope }}")


def test_whitespace_control(env: SandboxedEnvironment) -> None:
    """Block tags leave no blank lines or indentation behind, and the last newline is dropped."""
    source = "A\n  {% if true %}\nB\n  {% endif %}\nC\n"
    assert render(env, source) == "A\nB\nC"


def test_syntax_error_reports_line(env: SandboxedEnvironment) -> None:
    """A syntax error on line 3 is reported with lineno 3 and the template name."""
    source = "MSH|x\nPID|{{ msg['PID-3'] }}\nOBR|{{ msg['OBR-2' }}\nOBX|1\n"
    with pytest.raises(TemplateCompileError) as info:
        compile_template(env, source, name="orm.j2")
    assert info.value.lineno == 3
    assert info.value.filename == "orm.j2"
    assert str(info.value).startswith("orm.j2:3: ")


def test_unknown_filter_fails_at_compile_time(env: SandboxedEnvironment) -> None:
    """A misspelt filter is a compile error with its line, not a runtime one."""
    with pytest.raises(TemplateCompileError, match="No filter named 'hl7_to_dicom_dat'") as info:
        compile_template(env, "a\n{{ x|hl7_to_dicom_dat }}")
    assert info.value.lineno == 2 and info.value.filename == "<inline>"


def test_compile_error_is_a_value_error() -> None:
    """TemplateCompileError is a ValueError carrying message, lineno and filename."""
    err = TemplateCompileError("boom", lineno=4, filename="t.j2")
    assert isinstance(err, ValueError)
    assert (err.message, err.lineno, err.filename, str(err)) == ("boom", 4, "t.j2", "t.j2:4: boom")


def test_load_template_from_search_path(tmp_path: Path) -> None:
    """Templates load relative to the configured search paths."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ack.j2").write_text("MSA|AA|{{ msg['MSH-10'] }}\n")
    env = make_environment([str(tmp_path)])
    assert load_template(env, "sub/ack.j2").render(msg=HL7Message(ORM)) == "MSA|AA|CTRL1"


def test_load_template_syntax_error_names_file(tmp_path: Path) -> None:
    """A syntax error in a file reports that file and the line."""
    (tmp_path / "bad.j2").write_text("line1\nline2\n{% for x in %}\n{% endfor %}\n")
    with pytest.raises(TemplateCompileError) as info:
        load_template(make_environment([str(tmp_path)]), "bad.j2")
    assert info.value.lineno == 3
    assert info.value.filename is not None and info.value.filename.endswith("bad.j2")


@pytest.mark.parametrize("name", ["missing.j2", "../outside.j2"])
def test_load_template_missing_or_outside(tmp_path: Path, name: str) -> None:
    """Missing files and paths escaping the search paths are compile errors."""
    (tmp_path / "outside.j2").write_text("secret")
    inner = tmp_path / "inner"
    inner.mkdir()
    with pytest.raises(TemplateCompileError, match="template not found"):
        load_template(make_environment([str(inner)]), name)


def test_stock_templates_folder_is_searched_last(tmp_path: Path) -> None:
    """The stock folder exists and comes after configured search paths."""
    env = make_environment([str(tmp_path)])
    assert STOCK_TEMPLATES.is_dir()
    assert env.loader.searchpath == [str(tmp_path), str(STOCK_TEMPLATES)]  # type: ignore[union-attr]
