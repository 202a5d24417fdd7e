"""Warnings for a valid config (issue 6): destinations that never receive, filters that never pass,
templates reading fields the filters exclude. Each is a :class:`ConfigIssue` with severity ``warning``
at the file:line:col of its YAML node; none changes the exit code of ``radbridge validate``.

Definitions (a warning is given only when the fact is certain: the analysis is sound, not complete):

* **unused destination** — a destination that can never be handed a message, because it is
  ``enabled: false`` (at its ``enabled``); its channel is ``enabled: false`` (one warning at the
  channel's ``enabled``); its channel has an ``internal`` source that nothing feeds: no enabled
  ``channel`` destination of a fed channel names it, nor does a service section (``ris:``,
  ``archive:``) through its model's ``channel_refs()`` or, lacking one, any string in it (at
  ``source``); or its route filter can be true on its own but never together with the channel
  filter (at the route's ``filter``; checked only for channels without a transformer, because
  routes read the transformer's output).
* **filter that can never pass** — a channel or route filter that is false for every message on its
  own (``X == "A" and X == "B"``, ``X in ["A"] and not X in ["A"]``, ``exists X and X is empty``).
* **template reads an excluded field** — a channel or route Jinja template reading ``msg["P"]`` or
  ``msg.get("P")`` with a literal path P that is empty in every message reaching it: the channel
  template runs after the channel filter; a route template after its route filter and, when the
  channel has no transformer, the channel filter. ``not exists OBX`` excludes ``OBX-5``.

The analysis treats each distinct path as a variable over strings (missing fields read ``""``) and
decides each conjunction of atoms exactly when a path is pinned to finitely many values (``==``,
``in``, ``is empty``, their negations); other atoms are evaluated by the filter's own compiled test on
those candidate values, and are assumed satisfiable otherwise. Besides, a non-empty field implies a
present segment and field (``OBX-5.1`` set ⇒ ``OBX-5`` set ⇒ ``OBX`` present).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import nodes
from pydantic import BaseModel

from engine.config.errors import ConfigIssue, Loc, Mark, dotted
from engine.config.models import DESTINATION_KEYS, DestinationConfig
from engine.config.yamlpos import PositionMap
from engine.filters import Filter, _tokenize
from engine.hl7.message import FieldPath, PathError, parse_path

if TYPE_CHECKING:
    from engine.config.validate import ChannelSpec, ValidatedConfig

_BUDGET = 20_000  # search steps per question; beyond it the answer is "may match" (no warning)


@dataclass(frozen=True)
class _Atom:
    """One leaf of a filter with its polarity: the path it reads and which values satisfy it."""

    path: str | None  # canonical path; None for true/false
    holds: Callable[[str], bool]
    values: frozenset[str] | None  # every value satisfying it, when that set is finite


class _Value:
    """A message in which the one path a leaf reads has *value*."""

    def __init__(self, value: str) -> None:
        self.value = value

    def get(self, path: Any, default: str = "") -> str:
        """The value, whatever the path."""
        return self.value or default


def canonical(path: str) -> str:
    """``PID-5.1`` as the filter engine prints it (``OBX[1]-5`` → ``OBX-5``); a DICOM keyword as is."""
    try:
        return str(parse_path(path))
    except PathError:
        return path.strip()


def _atom(leaf: Any, negate: bool) -> _Atom:
    """Read a compiled leaf back into an atom (from ``engine.filters`` internals: its source text and test)."""
    toks = [t for t in _tokenize(leaf.source) if t.kind != "eof"]
    test = leaf.test

    def holds(value: str) -> bool:
        return bool(test(_Value(value))) != negate

    if toks[0].kind == "keyword" and toks[0].text in ("true", "false"):
        return _Atom(None, holds, None)
    word = toks[0].text
    if word == "exists":
        return _Atom(canonical(toks[1].text), holds, frozenset({""}) if negate else None)
    op = " ".join(t.text for t in toks[1:3] if t.kind == "keyword") if toks[1].kind == "keyword" else toks[1].text
    literals = frozenset(t.value for t in toks[2:] if t.kind in ("string", "number"))
    positive = {"==": literals, "in": literals, "is empty": frozenset({""})}
    negative = {"!=": literals, "not in": literals, "is not": frozenset({""})}
    values = (negative if negate else positive).get(op)
    return _Atom(canonical(word), holds, values)


def _nnf(node: Any, negate: bool = False) -> tuple[str, Any]:
    """The filter tree with negations pushed to the leaves: ``("and"|"or", [...])`` or ``("atom", _Atom)``."""
    if node.kind == "not":
        return _nnf(node.children[0], not negate)
    if node.kind in ("and", "or"):
        kind = {"and": "or", "or": "and"}[node.kind] if negate else node.kind
        return kind, [_nnf(c, negate) for c in node.children]
    return "atom", _atom(node, negate)


def _candidates(atoms: Sequence[_Atom]) -> list[str] | None:
    """Values of one path satisfying every atom; ``None`` when not pinned to finitely many."""
    sets = [a.values for a in atoms if a.values is not None]
    if not sets:
        return None
    return sorted(v for v in frozenset.intersection(*sets) if all(a.holds(v) for a in atoms))


def _ancestors(path: str) -> list[str]:
    """Paths that are non-empty whenever *path* is: its whole field, its segment, the first such segment."""
    try:
        fp = parse_path(path)
    except PathError:
        return []
    out = [FieldPath(fp.segment, fp.segment_rep, fp.field), FieldPath(fp.segment, fp.segment_rep)]
    out.append(FieldPath(fp.segment))
    return [p for p in dict.fromkeys(map(str, out)) if p != path]


class _GiveUp(Exception):
    """The search ran out of budget."""


class _Search:
    """Depth-first satisfiability of a conjunction of NNF trees over independent path variables."""

    def __init__(self) -> None:
        self.steps = 0
        self.conflicts: set[str] = set()

    def sat(self, goals: tuple[tuple[str, Any], ...], atoms: dict[str, tuple[_Atom, ...]]) -> bool:
        self.steps += 1
        if self.steps > _BUDGET:
            raise _GiveUp
        if not goals:
            return self.implied(atoms)
        (kind, arg), rest = goals[0], goals[1:]
        if kind == "and":
            return self.sat(tuple(arg) + rest, atoms)
        if kind == "or":
            return any(self.sat((branch, *rest), atoms) for branch in arg)
        if arg.path is None:
            return arg.holds("") and self.sat(rest, atoms)
        mine = atoms.get(arg.path, ()) + (arg,)
        if _candidates(mine) == []:
            self.conflicts.add(arg.path)
            return False
        return self.sat(rest, {**atoms, arg.path: mine})

    def implied(self, atoms: dict[str, tuple[_Atom, ...]]) -> bool:
        """A path that must be non-empty needs its ancestors free to be non-empty too."""
        for path, mine in atoms.items():
            if all(a.holds("") for a in mine):
                continue
            for up in _ancestors(path):
                if up in atoms and _candidates(atoms[up]) == [""]:
                    self.conflicts.update((path, up))
                    return False
        return True


def contradiction(filters: Iterable[Filter | None], nonempty: Iterable[str] = ()) -> list[str] | None:
    """The paths in conflict when *filters* (and *nonempty* paths being set) can never all hold; else ``None``."""
    search = _Search()
    try:
        goals = [_nnf(f._root) for f in filters if f is not None]  # read-only use of the compiled tree
        goals += [("atom", _Atom(canonical(p), bool, None)) for p in nonempty]
        return None if search.sat(tuple(goals), {}) else sorted(search.conflicts)
    except (_GiveUp, RecursionError):
        return None


def template_reads(env: Any, source: str) -> list[tuple[str, int]]:
    """``(path, template line)`` of each literal ``msg["P"]`` / ``msg.get("P")``; none if ``msg`` is rebound."""
    tree = env.parse(source)
    if any(n.name == "msg" and n.ctx != "load" for n in tree.find_all(nodes.Name)):
        return []

    def is_msg(node: Any) -> bool:
        return isinstance(node, nodes.Name) and node.name == "msg"

    def text(node: Any) -> str | None:
        return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None

    found = [(text(n.arg), n.lineno) for n in tree.find_all(nodes.Getitem) if is_msg(n.node)]
    for n in tree.find_all(nodes.Call):
        f = n.node
        if isinstance(f, nodes.Getattr) and f.attr == "get" and is_msg(f.node) and n.args:
            found.append((text(n.args[0]), n.lineno))
    return sorted({(p, line) for p, line in found if p is not None}, key=lambda r: (r[1], r[0]))


class _Linter:
    """Walks a validated config, collecting warnings."""

    def __init__(self, config: ValidatedConfig, positions: PositionMap) -> None:
        self.config = config
        self.positions = positions
        self.issues: list[ConfigIssue] = []

    def warn(self, loc: Loc, message: str, mark: Mark | None = None) -> None:
        self.issues.append(ConfigIssue(mark or self.positions.lookup(loc), dotted(loc), message, "warning"))

    def fed(self) -> set[str]:
        """Names of the channels something can feed (fixpoint over ``channel`` destinations)."""
        named = set().union(*(_feeds(s) for s in (self.config.archive, self.config.ris) if isinstance(s, BaseModel)))
        specs = {s.config.name: s for s in self.config.channels if s.config.enabled}
        fed = {n for n, s in specs.items() if s.config.source.get("type") != "internal" or n in named}
        todo = list(fed)
        while todo:
            for dest in specs[todo.pop()].destinations:
                target = getattr(dest.connector, "channel", None)
                if dest.config.type == "channel" and target in specs and target not in fed:
                    fed.add(target)
                    todo.append(target)
        return fed

    def run(self) -> list[ConfigIssue]:
        fed = self.fed()
        for spec in self.config.channels:
            self.channel(spec, fed)
        return sorted(self.issues, key=lambda i: (i.mark.file, i.mark.line, i.mark.col) if i.mark else ("", 0, 0))

    def channel(self, spec: ChannelSpec, fed: set[str]) -> None:
        cfg, loc = spec.config, spec.loc
        names = ", ".join(d.config.name for d in spec.destinations)
        if not cfg.enabled and names:
            self.warn(loc + ("enabled",), f"channel {cfg.name!r} is disabled: its destinations ({names}) never receive")
        elif cfg.enabled and cfg.name not in fed and names:
            why = "an internal source no channel destination or service section feeds"
            self.warn(loc + ("source",), f"channel {cfg.name!r} has {why}: its destinations ({names}) never receive")
        self.disabled(spec)
        cflt = spec.compiled.filter
        channel_ok = self.never(cflt, loc + ("filter",), "channel filter", "so every message is filtered")
        self.template(loc + ("transformer",), cfg.transformer, {"channel filter": cflt})
        with_channel = spec.compiled.transformer is None
        for dest, route in zip(spec.destinations, spec.compiled.routes):
            floc, name = dest.loc + ("filter",), dest.config.name
            own_ok = self.never(route.filter, floc, f"filter of destination {name!r}", "so it never receives")
            if own_ok and channel_ok and with_channel and cflt is not None and route.filter is not None:
                conflict = contradiction([cflt, route.filter])
                if conflict:
                    why = f"never true together with the channel filter {cflt.source!r}"
                    self.warn(floc, f"destination {name!r} never receives: its filter is {why} ({_paths(conflict)})")
            scope = {"channel filter": cflt} if with_channel else {}
            self.template(dest.loc + ("transformer",), dest.config.transformer, {**scope, "route filter": route.filter})

    def disabled(self, spec: ChannelSpec) -> None:
        raw = self.config.root.channels[spec.loc[1]].get("destinations") or []
        for j, draw in enumerate(raw):
            engine = {k: v for k, v in draw.items() if k in DESTINATION_KEYS}
            try:
                dest = DestinationConfig.model_validate(engine)
            except ValueError:
                continue
            if not dest.enabled:
                loc = spec.loc + ("destinations", j, "enabled")
                self.warn(loc, f"destination {dest.name!r} is disabled: it never receives")

    def never(self, flt: Filter | None, loc: Loc, what: str, consequence: str) -> bool:
        """Warn when *flt* alone can never be true; ``True`` when it can (or is absent)."""
        conflict = contradiction([flt]) if flt is not None else None
        if conflict is not None:
            self.warn(loc, f"the {what} can never be true ({_paths(conflict)}), {consequence}")
        return conflict is None

    def template(self, loc: Loc, cfg: Any, scope: dict[str, Filter | None]) -> None:
        """Warn for each literal path the template reads that the filters in *scope* force empty."""
        filters = [f for f in scope.values() if f is not None]
        if cfg is None or cfg.plugin is not None or not filters or contradiction(filters) is not None:
            return
        env = self.config.jinja_env
        try:
            source = cfg.template if cfg.template is not None else env.loader.get_source(env, cfg.template_file)[0]
            reads = template_reads(env, source)
        except Exception:  # noqa: BLE001 - a template validate.py accepted but we cannot read: no warning
            return
        key = loc + (("template",) if cfg.template is not None else ("template_file",))
        for path, line in reads:
            if contradiction(filters, [path]) is None:
                continue
            alone = [label for label, f in scope.items() if f is not None and contradiction([f], [path])]
            what = f"the {alone[0]} excludes it" if alone else f"the {' and '.join(scope)} together exclude it"
            mark = self.positions.lookup(key)
            if cfg.template is not None:
                mark = _block_line(mark, line)
            message = f'the template reads msg["{path}"] (template line {line}) but {what}: it is always empty'
            self.warn(key, message, mark)


def _block_line(mark: Mark, line: int) -> Mark:
    """Where template line *line* sits when the template is a YAML literal block (``|``); else *mark*."""
    try:
        lines = Path(mark.file).read_text(encoding="utf-8").splitlines()
        text = lines[mark.line - 1 + line] if lines[mark.line - 1][mark.col - 1] == "|" else None
    except (OSError, UnicodeDecodeError, IndexError):
        text = None
    return mark if text is None else Mark(mark.file, mark.line + line, len(text) - len(text.lstrip()) + 1)


def _paths(paths: list[str]) -> str:
    return f"contradiction on {', '.join(paths)}" if paths else "it is false"


def _feeds(model: BaseModel) -> set[str]:
    """Channels a service section sends into: its ``channel_refs()`` values, else every string in it."""
    if callable(getattr(model, "channel_refs", None)):
        return {name for name in model.channel_refs().values() if isinstance(name, str)}
    out: set[str] = set()
    todo: list[Any] = [model.model_dump()]
    while todo:
        value = todo.pop()
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, dict | list | tuple):
            todo.extend(value.values() if isinstance(value, dict) else value)
    return out


def lint(config: ValidatedConfig, positions: PositionMap) -> list[ConfigIssue]:
    """Warnings (never errors) about unused destinations, filters that never pass and excluded template reads."""
    try:
        return _Linter(config, positions).run()
    except Exception as exc:  # noqa: BLE001 - a lint bug must never stop validate or run
        return [ConfigIssue(None, "", f"config lint skipped: {type(exc).__name__}: {exc}", "warning")]
