"""The component reference and the config's JSON Schema, generated from the registered pydantic models.

``radbridge types`` prints :func:`render_text`; ``--markdown`` writes :func:`render_markdown` to
``docs/reference/components.md`` and ``--schema`` writes :func:`render_schema` to
``docs/reference/config.schema.json``. Everything is sorted and free of timestamps, so a diff of the
committed files shows real changes only (DESIGN.md §3.3: one registry keyed by ``type:``).
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import PydanticUndefined

from engine.config.models import ChannelConfig, DestinationConfig, RootConfig, TransformerConfig, parse_duration
from engine.registry import KINDS, Registry, default_registry

MARKDOWN_PATH = Path("docs/reference/components.md")
SCHEMA_PATH = Path("docs/reference/config.schema.json")
#: What ``parse_duration`` accepts as a string, in JSON Schema (ECMA-262) syntax.
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"
#: A ``${VAR}`` / ``${VAR:-default}`` reference somewhere in a string (substituted before validation).
PLACEHOLDER_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "min length"))
_BOUNDS += (("max_length", "max length"), ("pattern", "pattern"))
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


@dataclass(frozen=True)
class Option:
    """One config key: dotted key, type, default, constraints and description."""

    key: str
    type: str
    default: str
    constraints: str
    description: str


@dataclass(frozen=True)
class Section:
    """A table of options: one level of the engine's keys, or one registered component type."""

    kind: str  # "engine" or a registry kind
    name: str
    description: str
    options: tuple[Option, ...]
    note: str = ""

    @property
    def title(self) -> str:
        """``channel keys``, ``source mllp_listener``."""
        return self.name if self.kind == "engine" else f"{self.kind} {self.name}"


def _doc(obj: Any) -> str:
    """First line of an object's own docstring (not an inherited one)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return doc.strip().splitlines()[0] if doc else ""


def _annotated(tp: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated``; return the bare type and its metadata."""
    metadata: list[Any] = []
    while get_origin(tp) is Annotated:
        tp, *extra = get_args(tp)
        metadata.extend(extra)
    return tp, metadata


def _marks_duration(metadata: list[Any]) -> bool:
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata)


def _is_duration(tp: Any) -> bool:
    """Whether *tp* (or a member of a union) is ``engine.config.models.Duration``."""
    tp, metadata = _annotated(tp)
    return _marks_duration(metadata) or (
        get_origin(tp) in (Union, types.UnionType) and any(_is_duration(a) for a in get_args(tp))
    )


def type_text(tp: Any) -> str:
    """A reader's name for a field type: ``integer``, ``duration or null``, ``list of string``."""
    if _is_duration(tp) and get_origin(_annotated(tp)[0]) not in (Union, types.UnionType):
        return "duration"
    tp = _annotated(tp)[0]
    origin, args = get_origin(tp), get_args(tp)
    if tp in _NAMES:
        return _NAMES[tp]
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join([type_text(a) for a in args if a is not type(None)] + ["null"] * (type(None) in args))
    if origin in (list, tuple, set, frozenset):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return f"mapping of {type_text(args[1])}" if args else "mapping"
    return "mapping" if isinstance(tp, type) and issubclass(tp, BaseModel) else "any"


def _nested(tp: Any) -> tuple[type[BaseModel], str] | None:
    """The model a field holds (directly, optionally, in a list or as mapping values) and its key suffix."""
    tp = _annotated(tp)[0]
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, ""
    if origin in (Union, types.UnionType):
        found = [n for n in map(_nested, args) if n is not None]
        return found[0] if len(found) == 1 else None
    if origin is list and args and (inner := _nested(args[0])):
        return inner[0], "[]" + inner[1]
    if origin is dict and len(args) == 2 and (inner := _nested(args[1])):
        return inner[0], ".<name>" + inner[1]
    return None


def _value(value: Any, duration: bool) -> str:
    if duration and isinstance(value, int | float) and not isinstance(value, bool):
        for unit, seconds in _UNITS:
            if value >= seconds and value % seconds == 0:
                return f"{int(value // seconds)}{unit}"
        return f"{round(value * 1000)}ms" if value else "0s"
    return json.dumps(value, ensure_ascii=False)


def _field_type(field: FieldInfo) -> str:
    # pydantic moves the metadata of a field's top-level Annotated (``Duration``) onto the field
    return "duration" if _marks_duration(field.metadata) else type_text(field.annotation)


def _default(field: FieldInfo) -> str:
    factory = field.default_factory
    if factory is not None:
        return "{}" if isinstance(factory, type) and issubclass(factory, BaseModel) else _value(factory(), False)  # type: ignore[call-arg]
    duration = _marks_duration(field.metadata) or _is_duration(field.annotation)
    return "required" if field.default is PydanticUndefined else _value(field.default, duration)


def _constraints(field: FieldInfo) -> str:
    if _marks_duration(field.metadata):
        return ""  # a duration is never negative: said once in the header
    found = [(word, getattr(m, attr, None)) for m in field.metadata for attr, word in _BOUNDS]
    return ", ".join(f"{word} {value}" for word, value in found if value is not None)


def options(
    model: type[BaseModel], prefix: str = "", overrides: dict[str, tuple[str, str, str]] | None = None
) -> list[Option]:
    """Rows for every field of *model*, nested models expanded as dotted keys.

    *overrides* maps a field name to ``(type, default, description)`` shown instead, unexpanded.
    """
    rows: list[Option] = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if overrides and name in overrides:
            rows.append(Option(key, *overrides[name][:2], "", overrides[name][2]))
            continue
        nested = _nested(field.annotation)
        description = field.description or (_doc(nested[0]) if nested else "")
        rows.append(Option(key, _field_type(field), _default(field), _constraints(field), description))
        if nested and prefix.count(".") < 4:
            rows.extend(options(nested[0], f"{key}{nested[1]}."))
    return rows


def _describe(registry: Registry, kind: str, name: str) -> str:
    ctype = registry.get(kind, name)  # type: ignore[arg-type]
    shared = sum(t.model is ctype.model for t in registry.types() if t.kind == kind) > 1
    return (not shared and _doc(ctype.model)) or ctype.description


def sections(registry: Registry | None = None) -> list[Section]:
    """Every table of the reference: the engine's keys, then each registered type by kind and name."""
    reg = registry or default_registry()
    names = {kind: reg.names(kind) for kind in KINDS}
    services = [s for s in names["service"] if s in RootConfig.model_fields]
    root = {s: ("mapping", "{}", f"the {s} service's section (see service {s})") for s in services}
    root["channels"] = ("list of mappings", "[]", "the channels (see channel keys)")
    include = Option("include", "string or list of string", "[]", "", "YAML files merged into this one (globs)")
    sources, dests = ", ".join(names["source"]), ", ".join(names["destination"])
    channel = {"source": ("mapping", "required", f"the source; its type is one of: {sources}")}
    channel["destinations"] = ("list of mappings", "[]", "each: the destination keys plus one destination type's keys")
    engine = [
        Section("engine", "top level", _doc(RootConfig), (*options(RootConfig, overrides=root), include)),
        Section("engine", "channel keys", _doc(ChannelConfig), tuple(options(ChannelConfig, overrides=channel))),
        Section(
            "engine",
            "destination keys",
            _doc(DestinationConfig),
            tuple(options(DestinationConfig, overrides={"type": ("string", "required", f"one of: {dests}")})),
        ),
    ]
    engine_keys = ", ".join(k for k in DestinationConfig.model_fields if k != "type")
    notes = {
        "source": "Sits under a channel's source: key (see channel keys).",
        "destination": f"An entry of a channel's destinations: also takes the destination keys ({engine_keys}).",
    }
    out = list(engine)
    for kind in KINDS:
        for name in names[kind]:
            model = reg.get(kind, name).model
            over = {"type": (json.dumps(name), "required", "selects this type")} if kind in notes else None
            rows = tuple(options(model, overrides=over))
            out.append(Section(kind, name, _describe(reg, kind, name), rows, notes.get(kind, "")))
    return out


def render_text(registry: Registry | None = None, only: list[str] | None = None) -> str:
    """The plain-text listing ``radbridge types`` prints (*only*: these type or section names)."""
    lines: list[str] = []
    for sec in sections(registry):
        if only and sec.name not in only:
            continue
        lines.append(f"{sec.title.upper()}: {sec.description}")
        if sec.note:
            lines.append(f"  {sec.note}")
        rows = [
            (o.key, ", ".join(filter(None, (o.type, o.constraints))), o.default, o.description) for o in sec.options
        ]
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
        lines.append("")
    return "\n".join(line.rstrip() for line in lines)


_HEADER = """\
# Component reference

<!-- Generated by `radbridge types --markdown`: do not edit by hand; `radbridge types --check` (CI) fails when stale. -->

Generated by `radbridge types --markdown` from the pydantic config models of the engine and of every
registered component type; do not edit it by hand. The JSON Schema of the whole config file, for editors,
is generated the same way: [`config.schema.json`](config.schema.json).

Unknown keys are errors. A *duration* is a number of seconds (`30`) or a string with a unit (`250ms`,
`30s`, `5m`, `24h`, `7d`). `${VAR}` and `${VAR:-default}` may stand for any scalar value: they are
substituted before validation. Dotted keys are nested mappings (`retry.max_attempts`), `[]` marks a
list item and `<name>` a key of your choice.
"""
_GROUPS = {"engine": "Engine keys", "source": "Sources", "destination": "Destinations"}


def _cell(text: str, code: bool = False) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return f"`{text}`" if code and text else text


def render_markdown(registry: Registry | None = None) -> str:
    """``docs/reference/components.md``: one table per section, grouped by kind."""
    secs = sections(registry)
    out = [_HEADER, "## Contents", ""]
    for kind in ("engine", *KINDS):
        group = _GROUPS.get(kind, f"{kind.capitalize()}s")
        out.append(f"- {group}: " + ", ".join(f"`{s.name}`" for s in secs if s.kind == kind))
    for kind in ("engine", *KINDS):
        out += ["", f"## {_GROUPS.get(kind, f'{kind.capitalize()}s')}"]
        for sec in (s for s in secs if s.kind == kind):
            out += ["", f"### {sec.title}" if kind == "engine" else f"### {kind} `{sec.name}`", "", sec.description]
            if sec.note:
                out += ["", sec.note]
            out += ["", "| key | type | default | description |", "|---|---|---|---|"]
            for o in sec.options:
                kind_text = _cell(", ".join(filter(None, (o.type, o.constraints))), code=True)
                default = _cell(o.default, code=o.default != "required")
                out.append(f"| {_cell(o.key, True)} | {kind_text} | {default} | {_cell(o.description)} |")
    return "\n".join(out) + "\n"


class _Generator(GenerateJsonSchema):
    """pydantic's generator, with ``Duration`` as a reference to one shared definition."""

    def function_before_schema(self, schema: Any) -> Any:
        """A duration is a number of seconds or a string with a unit."""
        if schema.get("function", {}).get("function") is parse_duration:
            return {_DURATION_MARK: True}  # a $ref here would be looked up by pydantic; _scalars sets it
        return super().function_before_schema(schema)


_PLACEHOLDER = {"$ref": "#/$defs/Placeholder"}
_DURATION_MARK = "x-radbridge-duration"
_ANNOTATIONS = frozenset({"default", "description", "title", "examples"})
_STRAY = frozenset({"ge", "gt", "le", "lt", "title"})  # pydantic leaks these from nested Annotated


def _scalars(node: Any, strict: bool = True) -> Any:
    """Clean *node* and let a ``${VAR}`` string stand wherever a constrained scalar is expected."""
    if isinstance(node, dict) and _DURATION_MARK in node:
        return {"$ref": "#/$defs/Duration", **{k: v for k, v in node.items() if k in _ANNOTATIONS - {"title"}}}
    if not isinstance(node, dict) or "$ref" in node:
        return {k: v for k, v in node.items() if k not in _STRAY} if isinstance(node, dict) else node
    node = {k: v for k, v in node.items() if k not in _STRAY or (k == "title" and not strict)}
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [_scalars(b) for b in node[key]]
            flat = [x for b in branches for x in (b["anyOf"] if set(b) == {"anyOf"} else [b])]
            node[key] = [b for i, b in enumerate(flat) if b != _PLACEHOLDER or _PLACEHOLDER not in flat[:i]]
    for key in ("properties", "$defs"):
        if key in node:
            node[key] = {k: _scalars(v, key == "properties") for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _scalars(node[key])
    kind = node.get("type")
    constrained = kind == "string" and any(k in node for k in ("pattern", "minLength", "maxLength"))
    if "const" in node or "enum" in node or kind in ("integer", "number", "boolean") or constrained:
        inner = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
        return {**{k: v for k, v in node.items() if k in _ANNOTATIONS}, "anyOf": [inner, _PLACEHOLDER]}
    return node


def _refs(node: Any) -> set[str]:
    """Definition names referenced anywhere in *node*."""
    if isinstance(node, dict):
        here = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        return here.union(*(_refs(v) for k, v in node.items() if k != "$defs"))
    return set().union(*map(_refs, node)) if isinstance(node, list) else set()


def config_schema(registry: Registry | None = None) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of the whole config file, from the registered models."""
    reg = registry or default_registry()
    comps = {kind: [(n, reg.get(kind, n).model) for n in reg.names(kind)] for kind in KINDS}
    models = [RootConfig, ChannelConfig, DestinationConfig, TransformerConfig]
    models += [m for kind in KINDS for _, m in comps[kind] if m not in models]
    keys, top = models_json_schema([(m, "validation") for m in dict.fromkeys(models)], schema_generator=_Generator)
    defs = _scalars({"$defs": top["$defs"]}, strict=False)["$defs"]

    def ref(model: type[BaseModel]) -> str:
        return keys[(model, "validation")]["$ref"]

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return defs[ref(model).rsplit("/", 1)[1]]

    defs["Placeholder"] = {"type": "string", "pattern": PLACEHOLDER_PATTERN, "description": "${VAR} or ${VAR:-x}"}
    defs["Duration"] = {
        "description": "seconds, or a number with a unit: 250ms, 30s, 5m, 24h, 7d",
        "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}, _PLACEHOLDER],
    }
    for name, model in comps["source"]:
        defs[f"source_{name}"] = {"$ref": ref(model), "properties": {"type": {"const": name}}, "required": ["type"]}
    engine = body(DestinationConfig)
    for name, model in comps["destination"]:
        own = body(model)
        defs[f"destination_{name}"] = {
            "type": "object",
            "description": own.get("description", ""),
            "properties": {**own.get("properties", {}), **engine["properties"], "type": {"const": name}},
            "required": sorted({"type", *engine.get("required", ()), *own.get("required", ())}),
            "additionalProperties": own.get("additionalProperties", True),
        }
    channel = body(ChannelConfig)["properties"]
    channel["source"] = {
        "description": "the source; its type selects the connector",
        "oneOf": [{"$ref": f"#/$defs/source_{n}"} for n, _ in comps["source"]],
    }
    channel["destinations"] = {
        "description": "each: the destination keys plus one destination type's keys",
        "type": "array",
        "items": {"oneOf": [{"$ref": f"#/$defs/destination_{n}"} for n, _ in comps["destination"]]},
    }
    transformer = body(TransformerConfig)
    transformer["properties"]["type"] = {"anyOf": [{"enum": reg.names("transformer")}, {"type": "null"}]}
    transformer["oneOf"] = [{"required": [key]} for key in ("template", "template_file", "plugin")]
    root = body(RootConfig)
    root["properties"]["channels"] = {
        "description": "the channels",
        "type": "array",
        "items": {"$ref": ref(ChannelConfig)},
    }
    for name, model in comps["service"]:
        if name in root["properties"]:
            root["properties"][name] = {"$ref": ref(model)}
    string_list = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    root["properties"]["include"] = {**string_list, "description": "YAML files merged into this one (globs)"}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "radbridge configuration",
        "description": "Generated by `radbridge types --schema` from the registered config models; do not edit.",
        **{k: v for k, v in root.items() if k not in ("title", "description")},
    }
    used, todo = set(), _refs(schema)
    while todo:
        name = todo.pop()
        used.add(name)
        todo |= _refs(defs[name]) - used
    schema["$defs"] = {name: defs[name] for name in sorted(used)}
    return schema


def render_schema(registry: Registry | None = None) -> str:
    """``docs/reference/config.schema.json``: :func:`config_schema` as sorted, indented JSON."""
    return json.dumps(config_schema(registry), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
