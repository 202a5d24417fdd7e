"""The generated component reference, the config JSON Schema and ``radbridge types``."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from engine import cli_types, reference
from engine.config.models import ComponentConfig, Duration, parse_duration
from engine.registry import Registry, default_registry

ROOT = Path(__file__).resolve().parents[2]
_TYPES: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_TYPES |= {"integer": int, "number": (int, float)}
#: The keywords the fallback validator below implements (the schema may use no others).
_KEYWORDS = {"$schema", "$defs", "$ref", "title", "description", "default", "type", "properties", "required"}
_KEYWORDS |= {"additionalProperties", "items", "anyOf", "oneOf", "const", "enum", "pattern", "minimum", "maximum"}


class ToyConfig(ComponentConfig):
    """A toy source for the tests."""

    type: Literal["toy"] = "toy"
    port: int = Field(ge=1, le=65535, description="where it listens")
    greeting: str = Field("hello", description="what it says")
    patience: Duration = Field(90.0, description="how long it waits")


def _toy_registry() -> Registry:
    reg = Registry()
    reg.add("source", "toy", ToyConfig, lambda config, ctx: None)
    return reg


def _check(schema: dict, value: Any, root: dict, where: str = "$") -> list[str]:
    """Errors of *value* against *schema*: a small JSON Schema validator for the keywords in ``_KEYWORDS``."""
    out: list[str] = []
    if "$ref" in schema:
        out += _check(root["$defs"][schema["$ref"].rsplit("/", 1)[1]], value, root, where)
    kind = schema.get("type")
    if kind and (not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind in ("integer", "number"))):
        return [*out, f"{where}: not a {kind}"]
    if "const" in schema and value != schema["const"] or "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} not allowed")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        out += [f"{where}: below minimum" for _ in [0] if "minimum" in schema and value < schema["minimum"]]
        out += [f"{where}: above maximum" for _ in [0] if "maximum" in schema and value > schema["maximum"]]
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        out += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            if key in props:
                out += _check(props[key], item, root, f"{where}.{key}")
            elif extra is False:
                out.append(f"{where}: unknown key {key!r}")
            elif isinstance(extra, dict):
                out += _check(extra, item, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += _check(schema["items"], item, root, f"{where}[{i}]")
    if "anyOf" in schema and all(_check(b, value, root, where) for b in schema["anyOf"]):
        out.append(f"{where}: matches no alternative")
    if "oneOf" in schema and sum(not _check(b, value, root, where) for b in schema["oneOf"]) != 1:
        out.append(f"{where}: does not match exactly one alternative")
    return out


def _schema_errors(instance: Any) -> list[str]:
    """Validation errors of *instance* against the generated schema (jsonschema when installed)."""
    schema = reference.config_schema()
    if importlib.util.find_spec("jsonschema"):
        import jsonschema

        jsonschema.Draft202012Validator.check_schema(schema)
        return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]
    return _check(schema, instance, schema)


def _example() -> dict:
    return yaml.safe_load((ROOT / "config.example.yaml").read_text())


def _keywords(node: Any, parent: str = "") -> set[str]:
    if isinstance(node, list):
        return set().union(*(_keywords(n) for n in node))
    if not isinstance(node, dict):
        return set()
    mine = set(node) if parent not in ("properties", "$defs") else set()
    return mine.union(*(_keywords(v, k) for k, v in node.items()))


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_types.register(parser.add_subparsers())
    args = parser.parse_args(["types", *argv])
    return args.func(args)


def test_markdown_is_deterministic_and_marked_generated() -> None:
    """Two renderings are equal, carry no timestamp and say they come from ``radbridge types --markdown``."""
    text = reference.render_markdown()
    assert text == reference.render_markdown()
    assert "Generated by `radbridge types --markdown`" in text and "do not edit" in text
    assert not re.search(r"20\d\d-\d\d-\d\d", text)


def test_every_registered_type_is_listed() -> None:
    """Each registered component type has a section in the Markdown and in the plain listing."""
    markdown, listing = reference.render_markdown(), reference.render_text()
    for ctype in default_registry().types():
        assert f"### {ctype.kind} `{ctype.name}`" in markdown
        assert f"{ctype.kind} {ctype.name}".upper() + ":" in listing


def test_sample_model_rows_have_type_default_and_description() -> None:
    """Every option of a model appears with its type, constraints, default and description."""
    markdown = reference.render_markdown(_toy_registry())
    assert "A toy source for the tests." in markdown
    assert '| `type` | `"toy"` | required | selects this type |' in markdown
    assert "| `port` | `integer, >= 1, <= 65535` | required | where it listens |" in markdown
    assert '| `greeting` | `string` | `"hello"` | what it says |' in markdown
    assert "| `patience` | `duration` | `90s` | how long it waits |" in markdown


def test_nested_models_and_engine_keys_are_expanded() -> None:
    """Nested models appear as dotted keys, and destination entries point at the engine keys they mix in."""
    listing = reference.render_text(only=["mllp_sender", "destination keys"])
    assert re.search(r"^  tls\.server_name +string or null +null", listing, re.M)
    assert re.search(r"^  retry\.max_delay +duration +5m", listing, re.M)
    assert "also takes the destination keys (name, enabled, filter, transformer, retry)" in listing


def test_committed_reference_files_are_current() -> None:
    """docs/reference/ holds exactly what the generator produces (run `radbridge types --markdown --schema`)."""
    assert (ROOT / reference.MARKDOWN_PATH).read_text() == reference.render_markdown()
    assert (ROOT / reference.SCHEMA_PATH).read_text() == reference.render_schema()


def test_check_fails_on_a_stale_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--check`` passes on fresh copies and exits 1 with a diff when one of them was edited."""
    md, schema = tmp_path / "components.md", tmp_path / "config.schema.json"
    assert _run("--markdown", str(md), "--schema", str(schema)) == 0
    assert _run("--check", "--markdown", str(md), "--schema", str(schema)) == 0
    md.write_text(md.read_text().replace("| `port` |", "| `prot` |", 1))
    assert _run("--check", "--markdown", str(md), "--schema", str(schema)) == 1
    err = capsys.readouterr().err
    assert f"{md} is stale (2 lines differ)" in err and "-| `prot` |" in err and str(schema) not in err


def test_types_prints_the_listing(capsys: pytest.CaptureFixture[str]) -> None:
    """``radbridge types NAME`` prints that type's options."""
    assert _run("file_writer") == 0
    out = capsys.readouterr().out
    assert out.startswith("DESTINATION FILE_WRITER: ") and "segment_separator" in out and "SOURCE" not in out


def test_schema_is_well_formed() -> None:
    """The schema is draft 2020-12, every $ref resolves, and it uses only the keywords validated here."""
    schema = reference.config_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    text = json.dumps(schema)
    assert all(name in schema["$defs"] for name in re.findall(r'"#/\$defs/([^"]+)"', text))
    assert _keywords(schema) <= _KEYWORDS
    assert schema["additionalProperties"] is False and "include" in schema["properties"]
    reg = default_registry()
    sources = schema["$defs"]["ChannelConfig"]["properties"]["source"]["oneOf"]
    assert [s["$ref"].split("/source_", 1)[1] for s in sources] == reg.names("source")
    for name in reg.names("destination"):
        dest = schema["$defs"][f"destination_{name}"]
        assert dest["additionalProperties"] is False and {"name", "retry"} <= set(dest["properties"])


def test_schema_accepts_the_example_config() -> None:
    """config.example.yaml, parsed as plain YAML (placeholders unsubstituted), validates against the schema."""
    assert _schema_errors(_example()) == []


@pytest.mark.parametrize(
    "where, key, value",
    [
        ((), "colour", "blue"),
        (("channels", 0, "source"), "prot", 1),
        (("channels", 0, "destinations", 0), "hots", "x"),
        (("channels", 0, "source"), "type", "carrier_pigeon"),
        (("channels", 0, "destinations", 1), "type", "carrier_pigeon"),
        (("channels", 0, "source"), "idle_timeout", "ten minutes"),
        (("channels", 0, "source"), "port", "abc"),
    ],
)
def test_schema_rejects_unknown_keys_and_types(where: tuple, key: str, value: Any) -> None:
    """An unknown key, an unknown ``type`` or a malformed value anywhere makes the config invalid."""
    data = copy.deepcopy(_example())
    node = data
    for step in where:
        node = node[step]
    node[key] = value
    assert _schema_errors(data)


def test_schema_allows_placeholders_and_duration_strings() -> None:
    """``${VAR}`` stands for any scalar and durations take units, as the loader accepts."""
    data = copy.deepcopy(_example())
    source = data["channels"][0]["source"]
    source.update(port="${HIS_PORT}", max_message_bytes="${MAX:-1024}", idle_timeout="250ms")
    data["metrics"]["enabled"] = "${METRICS_ON}"
    assert _schema_errors(data) == []
    pattern = reference.config_schema()["$defs"]["Duration"]["anyOf"][1]["pattern"]
    for text in ("30", "30s", " 5m ", "2.5h", "7d", "250ms"):
        assert re.search(pattern, text) and parse_duration(text) >= 0
    for text in ("5 minutes", "-1s", "s", "1w"):
        assert not re.search(pattern, text)
        with pytest.raises(ValueError):
            parse_duration(text)
