"""Validate a config file completely, collecting every error with its place (DESIGN.md §3.4).

``radbridge validate`` and ``radbridge run`` both call :func:`validate_config`; ``run``
builds from the :class:`ValidatedConfig` it returns, so the two can never disagree.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.components import BuildContext
from engine.config.errors import ConfigError, ConfigIssue, Mark, dotted, pydantic_issues
from engine.config.lint import lint
from engine.config.models import DESTINATION_KEYS, ChannelConfig, DestinationConfig, RootConfig, TransformerConfig
from engine.config.yamlpos import PositionMap, load_yaml
from engine.filters import FilterSyntaxError, compile_filters
from engine.pipeline import CompiledChannel, Route
from engine.registry import Registry, default_registry
from engine.store.db import default_url


@dataclass
class DestinationSpec:
    """A validated destination: engine settings plus the connector's own config."""

    config: DestinationConfig
    connector: BaseModel
    loc: tuple


@dataclass
class ChannelSpec:
    """A validated channel, with its pure pipeline compiled."""

    config: ChannelConfig
    source: BaseModel
    destinations: list[DestinationSpec]
    compiled: CompiledChannel
    loc: tuple


@dataclass
class ValidatedConfig:
    """Everything ``run`` needs, already checked."""

    root: RootConfig
    path: Path
    config_dir: Path
    data_dir: Path
    database_url: str
    channels: list[ChannelSpec]
    registry: Registry
    jinja_env: Any
    warnings: list[ConfigIssue] = field(default_factory=list)
    archive: Any = None  # the archive: section validated by the archive service's own model, if installed
    ris: Any = None  # the ris: section validated by the RIS service's model, if installed


class _Checker:
    """Collects issues while walking the loaded data."""

    def __init__(self, positions: PositionMap, registry: Registry, config_dir: Path, jinja_env: Any) -> None:
        self.positions = positions
        self.registry = registry
        self.config_dir = config_dir
        self.jinja_env = jinja_env
        self.issues: list[ConfigIssue] = []

    def add(self, loc: tuple, message: str, *, key: bool = False, mark: Mark | None = None) -> None:
        """Record an error at *loc*."""
        self.issues.append(ConfigIssue(mark or self.positions.lookup(loc, key=key), dotted(loc), message))

    def model(self, model: type[BaseModel], data: Any, loc: tuple) -> Any:
        """Validate *data* against *model*; ``None`` (and issues) when it fails."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.issues.extend(pydantic_issues(exc, self.positions, loc, model=model))
            return None

    def component(self, kind: str, data: Any, loc: tuple) -> BaseModel | None:
        """Validate a connector config by its ``type``."""
        if not isinstance(data, dict) or "type" not in data:
            self.add(loc, f"a {kind} needs a 'type' (one of: {', '.join(self.registry.names(kind))})")
            return None
        try:
            ctype = self.registry.get(kind, str(data["type"]))
        except KeyError as exc:
            self.add(loc + ("type",), str(exc.args[0]))
            return None
        return self.model(ctype.model, data, loc)

    def filter(self, expr: Any, loc: tuple):
        """Compile a filter expression (or list); syntax errors point into the expression."""
        try:
            return compile_filters(expr)
        except FilterSyntaxError as exc:
            item_loc = loc + (exc.index,) if isinstance(expr, list) and getattr(exc, "index", None) is not None else loc
            mark = self.positions.lookup(item_loc)
            col = mark.col + max(0, exc.column - 1) + (1 if isinstance(expr, str) else 0)
            self.add(loc, str(exc), mark=Mark(mark.file, mark.line, col))
            return None

    def transformer(self, cfg: TransformerConfig | None, loc: tuple, channel: str):
        """Build a transformer now, so template errors surface at validation time."""
        if cfg is None:
            return None
        try:
            ctype = self.registry.get("transformer", cfg.type or "jinja")
        except KeyError as exc:
            self.add(loc + ("type",), str(exc.args[0]))
            return None
        ctx = BuildContext(None, channel, "transformer", self.config_dir, self.config_dir, jinja_env=self.jinja_env)
        try:
            return ctype.build(cfg, ctx)
        except Exception as exc:  # noqa: BLE001 - every build error becomes a config issue
            lineno = getattr(exc, "lineno", None)
            message = getattr(exc, "message", None) or str(exc)
            if cfg.template_file and lineno:
                filename = getattr(exc, "filename", None) or str(self.config_dir / cfg.template_file)
                self.add(loc + ("template_file",), message, mark=Mark(filename, lineno, 1))
            elif cfg.template is not None and lineno:
                mark = self.positions.lookup(loc + ("template",))
                line = mark.line + lineno if "\n" in cfg.template else mark.line
                self.add(loc + ("template",), f"template line {lineno}: {message}", mark=Mark(mark.file, line, 1))
            else:
                key = "plugin" if cfg.plugin else ("template_file" if cfg.template_file else "template")
                self.add(loc + (key,), message)
            return None


def _check_ports(checker: _Checker, binds: list[tuple[tuple, str, int]]) -> None:
    seen: dict[tuple[str, int], tuple] = {}
    for loc, host, port in binds:
        if port == 0:
            continue
        if (host, port) in seen:
            checker.add(loc, f"port {port} on {host} is also used at {dotted(seen[(host, port)])}")
            continue
        seen[(host, port)] = loc
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as exc:
            why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            checker.add(loc, f"port {port} on {host} {why}")


def _check_files(checker: _Checker, connector: BaseModel | None, loc: tuple) -> None:
    """Issues from ``check_files(config_dir)`` of a connector's sub-settings (TLS certificates that cannot be read)."""
    if connector is None:
        return
    for name in type(connector).model_fields:
        check = getattr(getattr(connector, name), "check_files", None)
        for key, message in check(checker.config_dir) if check is not None else ():
            checker.add(loc + (name, *key), message)


#: Engine-wide services built from top-level sections, in the order they are built.
SERVICES = ("archive", "ris")


def validate_config(
    path: str | Path, registry: Registry | None = None, *, environ: Any = None, check_ports: bool = True
) -> ValidatedConfig:
    """Load, validate and compile *path*; raise :class:`ConfigError` listing every problem."""
    from mappings.environment import make_environment

    path = Path(path)
    registry = registry or default_registry()
    data, positions, issues = load_yaml(path, environ=environ)
    config_dir = path.resolve().parent
    checker = _Checker(positions, registry, config_dir, make_environment([str(config_dir)]))
    checker.issues.extend(issues)
    # Keep validating past problems in single values (an unset ${VAR}, a missing include) so every
    # error is reported at once; stop only when the file itself could not be read as a mapping.
    fatal = any(not issue.path for issue in issues)
    root = checker.model(RootConfig, data, ()) if not fatal else None
    channels: list[ChannelSpec] = []
    binds: list[tuple[tuple, str, int]] = []
    services: dict[str, Any] = {}
    if root is not None:
        for name in SERVICES:
            service = registry.find("service", name)
            if service is not None:  # each engine-wide service validates its own top-level section
                raw = data.get(name) if isinstance(data, dict) else None
                services[name] = cfg = checker.model(service.model, raw if raw is not None else {}, (name,))
                # A service model may check more than its fields (``check``: templates that do not compile).
                for key, message in cfg.check(checker.jinja_env, config_dir) if hasattr(cfg, "check") else ():
                    checker.add((name, key), message)
        if root.metrics.enabled:
            binds.append((("metrics", "port"), root.metrics.host, root.metrics.port))
        if root.admin.enabled:
            binds.append((("admin", "port"), root.admin.host, root.admin.port))
        names: dict[str, int] = {}
        for i, raw in enumerate(root.channels):
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str):
                if name in names:
                    checker.add(("channels", i, "name"), f"channel name {name!r} is used twice")
                names[name] = i
            spec = _channel(checker, raw, ("channels", i), binds)
            if spec is not None:
                channels.append(spec)
        for spec in channels:
            for dest in spec.destinations:
                target = getattr(dest.connector, "channel", None)
                if dest.config.type == "channel" and target not in names:
                    checker.add(dest.loc + ("channel",), f"no channel named {target!r}")
        for name, cfg in services.items():  # channels a service sends into (``channel_refs``: key → name)
            for key, target in cfg.channel_refs().items() if hasattr(cfg, "channel_refs") else ():
                if target is not None and target not in names:
                    checker.add((name, key), f"no channel named {target!r}")
        if check_ports:
            _check_ports(checker, binds)
    if any(i.severity == "error" for i in checker.issues):
        # A value that already has a load problem is not reported again as invalid (e.g. "" for an unset ${VAR}).
        flagged = {issue.path for issue in issues}
        found = issues + [i for i in checker.issues[len(issues) :] if i.path not in flagged]
        main = str(path)
        raise ConfigError(
            sorted(found, key=lambda i: (i.mark.file != main, i.mark.file, i.mark.line, i.mark.col) if i.mark else ())
        )
    assert root is not None
    data_dir = (config_dir / root.data_dir).resolve()
    result = ValidatedConfig(
        root=root,
        path=path,
        config_dir=config_dir,
        data_dir=data_dir,
        database_url=root.database or default_url(data_dir),
        channels=channels,
        registry=registry,
        jinja_env=checker.jinja_env,
        warnings=[i for i in checker.issues if i.severity != "error"],
        archive=services.get("archive") or root.archive,
        ris=services.get("ris"),
    )
    result.warnings.extend(lint(result, positions))  # warnings only: unused destinations, dead routes
    return result


def _channel(checker: _Checker, raw: Any, loc: tuple, binds: list) -> ChannelSpec | None:
    cfg: ChannelConfig | None = checker.model(ChannelConfig, raw, loc)
    if cfg is None:
        return None
    source = checker.component("source", cfg.source, loc + ("source",))
    _check_files(checker, source, loc + ("source",))
    if source is not None and hasattr(source, "bind_address"):
        binds.append((loc + ("source", "port"), *source.bind_address()))
    compiled = CompiledChannel(
        cfg.name,
        filter=checker.filter(cfg.filter, loc + ("filter",)),
        transformer=checker.transformer(cfg.transformer, loc + ("transformer",), cfg.name),
    )
    dests: list[DestinationSpec] = []
    seen: set[str] = set()
    for j, draw in enumerate(cfg.destinations):
        dloc = loc + ("destinations", j)
        if not isinstance(draw, dict):
            checker.add(dloc, "a destination must be a mapping")
            continue
        engine_part = {k: v for k, v in draw.items() if k in DESTINATION_KEYS}
        dcfg = checker.model(DestinationConfig, engine_part, dloc)
        conn_part = {k: v for k, v in draw.items() if k not in DESTINATION_KEYS or k == "type"}
        connector = checker.component("destination", conn_part, dloc)
        if dcfg is None or connector is None:
            continue
        if dcfg.name in seen:
            checker.add(dloc + ("name",), f"destination name {dcfg.name!r} is used twice in this channel")
        seen.add(dcfg.name)
        if not dcfg.enabled:
            continue
        _check_files(checker, connector, dloc)  # only what will be built: a disabled one may lack its files
        route = Route(
            dcfg.name,
            filter=checker.filter(dcfg.filter, dloc + ("filter",)),
            transformer=checker.transformer(dcfg.transformer, dloc + ("transformer",), cfg.name),
        )
        compiled.routes.append(route)
        dests.append(DestinationSpec(dcfg, connector, dloc))
    return ChannelSpec(cfg, source, dests, compiled, loc) if source is not None else None
