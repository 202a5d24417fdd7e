"""Load YAML keeping every node's position, with ``${VAR}`` substitution and ``include:`` (DESIGN.md §3.4).

Locations are tuples (str for mapping keys, int for list indexes); problems are collected, not raised.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.config.errors import ConfigIssue, Loc, Mark, dotted, pydantic_issues

__all__ = ["PositionMap", "expand_env", "load_yaml", "load_yaml_string", "pydantic_issues"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_ENV = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class PositionMap:
    """Marks of values and of mapping keys, by location tuple."""

    def __init__(self, file: str = "<config>") -> None:
        self.file = file
        self.value_marks: dict[Loc, Mark] = {}
        self.key_marks: dict[Loc, Mark] = {}

    def __contains__(self, loc: object) -> bool:
        return loc in self.value_marks

    def lookup(self, loc: Iterable[str | int], *, key: bool = False) -> Mark:
        """Best mark for ``loc``: its key (if ``key``), else its value, else the nearest ancestor's value."""
        loc = tuple(loc)
        if key and loc in self.key_marks:
            return self.key_marks[loc]
        ancestors = (loc[:end] for end in range(len(loc), -1, -1))
        return next((self.value_marks[a] for a in ancestors if a in self.value_marks), Mark(self.file, 1, 1))

    def drop(self, prefix: Loc) -> None:
        """Forget every position at or below ``prefix``."""
        for table in (self.value_marks, self.key_marks):
            for loc in [loc for loc in table if loc[: len(prefix)] == prefix]:
                del table[loc]

    def absorb(self, other: PositionMap, remap: Any = None, *, under: Loc = (), skip: Sequence[Loc] = ()) -> None:
        """Copy ``other``'s positions at or below ``under`` (remapped), never overriding existing ones."""
        for mine, theirs in ((self.value_marks, other.value_marks), (self.key_marks, other.key_marks)):
            for loc, mark in theirs.items():
                if loc[: len(under)] != under or any(loc[: len(s)] == s for s in skip):
                    continue
                mine.setdefault(remap(loc) if remap else loc, mark)


def expand_env(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``$${``; return the text and any problems."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        if match.group(1) is None:
            problems.append("unterminated '${' (write '$${' for a literal '${')")
            return whole
        name, sep, default = match.group(1).partition(":-")
        if not _NAME.match(name):
            problems.append(f"invalid environment variable reference {whole!r}")
            return whole
        value = environ.get(name)
        if sep:
            return value if value else default
        if value is None:
            problems.append(f"environment variable {name} is not set")
            return ""
        return value

    return _ENV.sub(replace, text), problems


class _Builder:
    """Turns one file's YAML nodes into plain data, recording positions and issues."""

    def __init__(self, file: str, environ: Mapping[str, str], stack: tuple[tuple[str, str], ...] = ()) -> None:
        self.file = file
        self.environ = environ
        self.stack = (*stack, (os.path.realpath(file), file))
        self.positions = PositionMap(file)
        self.issues: list[tuple[Loc, Mark | None, str]] = []
        self._active: set[int] = set()
        self._constructor = SafeConstructor()

    def mark(self, node: Node | Any) -> Mark:
        """Convert a PyYAML node or 0-based mark into a 1-based :class:`Mark`."""
        start = getattr(node, "start_mark", node)
        return Mark(self.file, start.line + 1, start.column + 1)

    def load(self, text: str) -> dict[str, Any]:
        """Parse ``text``; resolve ``include:``; return the top-level mapping (``{}`` on failure)."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            at = exc.problem_mark or exc.context_mark
            message = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.context_mark and exc.problem:
                message += f" ({exc.context} at line {exc.context_mark.line + 1})"
            self.issues.append(((), self.mark(at) if at else Mark(self.file, 1, 1), message))
            return {}
        except yaml.YAMLError as exc:  # e.g. ReaderError: a character YAML does not allow
            pos = getattr(exc, "position", 0)
            at = Mark(self.file, text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos))
            self.issues.append(((), at, str(exc).split("\n")[0]))
            return {}
        if root is None:
            return {}
        data = self.build(root, ())
        if not isinstance(data, dict):
            self.issues.append(((), self.mark(root), "the top level must be a mapping"))
            return {}
        if "include" in data:
            self._include(data)
        return data

    def build(self, node: Node, loc: Loc) -> Any:
        """Construct plain data for ``node`` at ``loc``."""
        if id(node) in self._active:
            self.issues.append((loc, self.mark(node), "recursive alias"))
            return None
        self.positions.value_marks[loc] = self.mark(node)
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        if node.tag not in ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
            self.issues.append((loc, self.mark(node), f"unsupported tag {node.tag!r}"))
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, loc)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode, loc: Loc) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.issues.append((loc, self.mark(node), f"invalid value: {problem}"))
            return None
        if isinstance(value, str):
            value, problems = expand_env(value, self.environ)
            self.issues.extend((loc, self.mark(node), problem) for problem in problems)
        return value

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge_key(result, value_node, loc)
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self.issues.append((loc, self.mark(key_node), "mapping keys must be scalars"))
                continue
            key, here, key_mark = key_node.value, (*loc, key_node.value), self.mark(key_node)
            if key in first:
                message = f"duplicate key {key!r} (first at line {first[key].line})"
                self.issues.append((here, key_mark, message))
                continue
            first[key] = key_mark
            if key in result:
                self.positions.drop(here)
            self.positions.key_marks[here] = key_mark
            result[key] = self.build(value_node, here)
        return result

    def _merge_key(self, result: dict[str, Any], node: Node, loc: Loc) -> None:
        """Apply a YAML ``<<:`` merge key: earlier sources win, explicit keys override later."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.issues.append((loc, self.mark(source), "'<<' needs a mapping or a list of mappings"))
                continue
            saved, self.positions = self.positions, PositionMap(self.file)
            try:
                built = self.build(source, loc)
            finally:
                sub, self.positions = self.positions, saved
            for key, value in built.items():
                if key not in result:
                    result[key] = value
                    self.positions.absorb(sub, under=(*loc, key))

    def _include(self, data: dict[str, Any]) -> None:
        spec = data.pop("include")
        patterns = [spec] if isinstance(spec, str) else spec
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            at = self.positions.lookup(("include",))
            self.issues.append((("include",), at, "must be a string or a list of strings"))
            patterns = []
        for index, pattern in enumerate(patterns):
            loc: Loc = ("include",) if isinstance(spec, str) else ("include", index)
            for path in self._expand(pattern, loc):
                self._merge_file(data, path, loc)
        self.positions.drop(("include",))

    def _expand(self, pattern: str, loc: Loc) -> list[str]:
        full = os.path.normpath(os.path.join(os.path.dirname(self.file), pattern))
        if any(c in pattern for c in "*?["):
            matches = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
            if not matches:
                self.issues.append((loc, self.positions.lookup(loc), f"include pattern {pattern!r} matched no files"))
            return matches
        if not os.path.isfile(full):
            self.issues.append((loc, self.positions.lookup(loc), f"included file {full!r} not found"))
            return []
        return [full]

    def _merge_file(self, data: dict[str, Any], path: str, loc: Loc) -> None:
        mark = self.positions.lookup(loc)
        real = os.path.realpath(path)
        if any(real == seen for seen, _ in self.stack):
            chain = " -> ".join([name for _, name in self.stack] + [path])
            self.issues.append((loc, mark, f"include cycle: {chain}"))
            return
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.issues.append((loc, mark, f"cannot read included file {path!r}: {exc}"))
            return
        sub = _Builder(path, self.environ, self.stack)
        included = sub.load(text)
        offsets: dict[Loc, int] = {}
        conflicts: list[Loc] = []
        self._combine(data, included, (), sub.positions, offsets, conflicts)

        def remap(old: Loc) -> Loc:
            for i in range(1, len(old)):
                if old[:i] in offsets and isinstance(old[i], int):
                    return (*old[:i], old[i] + offsets[old[:i]], *old[i + 1 :])
            return old

        self.positions.absorb(sub.positions, remap, skip=conflicts)
        self.issues.extend((remap(where), at, message) for where, at, message in sub.issues)

    def _combine(self, dst: dict, src: dict, loc: Loc, src_pos: PositionMap, offsets: dict, conflicts: list) -> None:
        """Merge ``src`` into ``dst``: lists concatenate, mappings recurse, scalars must agree."""
        for key, value in src.items():
            here = (*loc, key)
            old = dst.get(key)
            if key not in dst:
                dst[key] = value
            elif isinstance(old, list) and isinstance(value, list):
                offsets[here] = len(old)
                old.extend(value)
            elif isinstance(old, dict) and isinstance(value, dict):
                self._combine(old, value, here, src_pos, offsets, conflicts)
            else:
                conflicts.append(here)
                if type(old) is not type(value) or old != value:
                    theirs = self.positions.lookup(here)
                    self.issues.append((here, src_pos.lookup(here), f"conflicts with {theirs.file}:{theirs.line}"))


Loaded = tuple[dict[str, Any], PositionMap, list[ConfigIssue]]


def _finish(builder: _Builder, data: dict[str, Any]) -> Loaded:
    """Package the result, reporting a problem seen through several aliases or merges once."""
    first: dict[tuple[Mark | None, str], Loc] = {}
    for loc, mark, message in builder.issues:
        first.setdefault((mark, message), loc)
    return data, builder.positions, [ConfigIssue(mark, dotted(loc), msg) for (mark, msg), loc in first.items()]


def load_yaml_string(text: str, filename: str = "<string>", *, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load YAML text as if read from ``filename``; return data, positions and issues."""
    builder = _Builder(filename, os.environ if environ is None else environ)
    return _finish(builder, builder.load(text))


def load_yaml(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load a YAML config file (with includes); return data, positions and issues."""
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return {}, PositionMap(file), [ConfigIssue(None, "", f"cannot read {file}: {exc}")]
    return load_yaml_string(text, file, environ=environ)
