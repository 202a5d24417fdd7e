"""Configuration issues with a place: ``file:line:col: dotted.path: message`` (DESIGN.md §3.4)."""

from __future__ import annotations

from collections import abc
from collections.abc import Iterable
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Literal, Protocol, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a configuration file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass
class ConfigIssue:
    """One problem found in the configuration, with its place and dotted path."""

    mark: Mark | None
    path: str
    message: str
    severity: Severity = "error"

    def format(self) -> str:
        """Render as ``file:line:col: dotted.path: message``."""
        where = str(self.mark) if self.mark is not None else "<config>"
        message = f"warning: {self.message}" if self.severity == "warning" else self.message
        if self.path:
            return f"{where}: {self.path}: {message}"
        return f"{where}: {message}"

    def __str__(self) -> str:
        return self.format()


class ConfigError(Exception):
    """Raised when a configuration has issues; carries every one of them."""

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(str(self))

    @property
    def errors(self) -> list[ConfigIssue]:
        """The issues with severity ``error``."""
        return [issue for issue in self.issues if issue.severity == "error"]

    def __str__(self) -> str:
        count = len(self.errors)
        lines = [issue.format() for issue in self.issues]
        lines.append(f"{count} error" if count == 1 else f"{count} errors")
        return "\n".join(lines)


def dotted(loc: Iterable[str | int]) -> str:
    """Turn ``("channels", 0, "source", "port")`` into ``channels[0].source.port``."""
    out = ""
    for element in loc:
        if isinstance(element, int) and not isinstance(element, bool):
            out += f"[{element}]"
        else:
            out += f".{element}" if out else str(element)
    return out


class Positions(Protocol):
    """What :func:`pydantic_issues` needs from a position map (see ``yamlpos.PositionMap``)."""

    def __contains__(self, loc: object) -> bool: ...

    def lookup(self, loc: Iterable[str | int], *, key: bool = False) -> Mark: ...


def pydantic_issues(
    exc: ValidationError, positions: Positions, prefix: Loc = (), model: type[BaseModel] | None = None
) -> list[ConfigIssue]:
    """Turn a pydantic ``ValidationError`` for data at ``prefix`` into placed issues.

    Pass the validated ``model`` to list the allowed keys in "unknown key" messages.
    """
    issues = []
    for err in exc.errors(include_url=False):
        raw = tuple(err["loc"])
        loc = _data_loc(positions, tuple(prefix), raw, err["type"])
        message = err["msg"]
        if err["type"] == "extra_forbidden" and raw:
            message = f"unknown key {raw[-1]!r}"
            allowed = _allowed_keys(model, raw[:-1]) if model is not None else None
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        issues.append(ConfigIssue(positions.lookup(loc, key=err["type"] == "extra_forbidden"), dotted(loc), message))
    return issues


def _data_loc(positions: Positions, prefix: Loc, raw: Loc, kind: str) -> Loc:
    """Map a pydantic loc onto the data: drop union tags and member names that are not keys."""
    out = prefix
    for i, element in enumerate(raw):
        here = (*out, element)
        if i + 1 < len(raw):
            following = raw[i + 1]  # a tag is followed by a key of the level the tag sits on
            is_tag = (*out, following) in positions and (*here, following) not in positions
            if here in positions and not is_tag:
                out = here
        elif here in positions or kind.startswith("missing"):
            out = here
    return out


def _allowed_keys(model: Any, loc: Loc) -> list[str] | None:
    """Field names (aliases) of the model reached by following a pydantic ``loc`` from ``model``."""
    tp = _unwrap(model)
    for element in loc:
        tp = _unwrap(_step(tp, element))
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [field.alias or name for name, field in tp.model_fields.items()]
    return None


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``Optional`` around a type."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif _is_union(tp) and len(members := [a for a in get_args(tp) if a is not type(None)]) == 1:
            tp = members[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, UnionType)


def _step(tp: Any, element: str | int) -> Any:
    """The type found at ``element`` inside ``tp``, or None."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, field in tp.model_fields.items():
            if element in (name, field.alias):
                return field.annotation
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset, abc.Sequence) and args and isinstance(element, int):
        return args[0]
    if origin in (dict, abc.Mapping) and len(args) == 2:
        return args[1]
    if _is_union(tp):
        for member in map(_unwrap, args):
            if isinstance(member, type) and (member.__name__ == element or _has_tag(member, element)):
                return member
    return None


def _has_tag(model: Any, tag: str | int) -> bool:
    """Whether some ``Literal`` field of ``model`` admits ``tag`` (a discriminator value)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return False
    return any(
        get_origin(f.annotation) is Literal and tag in get_args(f.annotation) for f in model.model_fields.values()
    )
