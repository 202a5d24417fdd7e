"""The per-message work as a plain synchronous function (DESIGN.md §3.1): no reactor, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from engine.filters import Filter, describe_failure
from engine.hl7.message import HL7Error, HL7Message
from engine.store.schema import ERROR, FILTERED, TRANSFORMED


class Transformer(Protocol):
    """Anything with ``transform(msg, context) -> str | None`` (see mappings/PLUGINS.md)."""

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Reshape *msg*; ``None`` means nothing to send."""


@dataclass
class Route:
    """One destination's route: an optional filter and transformer."""

    name: str
    filter: Filter | None = None
    transformer: Transformer | None = None


@dataclass
class CompiledChannel:
    """The pure part of a channel, compiled at validation time."""

    name: str
    filter: Filter | None = None
    transformer: Transformer | None = None
    routes: list[Route] = field(default_factory=list)

    @cached_property
    def routes_read_output(self) -> bool:
        """Whether a route filters or transforms (and so reads the channel transformer's output)."""
        return any(r.filter is not None or r.transformer is not None for r in self.routes)


@dataclass
class PipelineResult:
    """What the pipeline decided for one message."""

    status: str
    outputs: list[tuple[str, str]] = field(default_factory=list)
    transformed: str | None = None
    filter_info: str | None = None
    error: str | None = None
    error_stage: str | None = None


def _error(stage: str, exc: BaseException, route: str | None = None) -> PipelineResult:
    where = f"{stage} of destination {route}" if route else stage
    return PipelineResult(ERROR, error=f"{where} failed: {type(exc).__name__}: {exc}", error_stage=stage)


def run_pipeline(msg: HL7Message, channel: CompiledChannel, context: dict[str, Any] | None = None) -> PipelineResult:
    """Filter, transform and route *msg* through *channel*."""
    ctx = {"channel": channel.name, **(context or {})}
    if channel.filter is not None:
        try:
            if not channel.filter(msg):
                return PipelineResult(FILTERED, filter_info=f"channel filter: {describe_failure(channel.filter, msg)}")
        except Exception as exc:
            return _error("filter", exc)
    current, transformed = msg, None
    if channel.transformer is not None:
        try:
            transformed = channel.transformer.transform(msg, ctx)
        except Exception as exc:
            return _error("transform", exc)
        if not transformed:
            return PipelineResult(FILTERED, filter_info="channel transformer produced nothing")
        if channel.routes_read_output:  # only then does a route need the output parsed
            try:
                current = HL7Message(transformed)
            except HL7Error:
                current = None
    text = transformed if transformed is not None else msg.text
    outputs: list[tuple[str, str]] = []
    notes: list[str] = []
    for route in channel.routes:
        if route.filter is not None:
            if current is None:
                return PipelineResult(ERROR, error=f"filter of destination {route.name}: output is not HL7")
            try:
                passed = route.filter(current)
            except Exception as exc:
                return _error("filter", exc, route.name)
            if not passed:
                notes.append(f"{route.name}: {describe_failure(route.filter, current)}")
                continue
        content: str | None = text
        if route.transformer is not None:
            try:
                content = route.transformer.transform(current if current is not None else msg, ctx)
            except Exception as exc:
                return _error("transform", exc, route.name)
            if not content:
                notes.append(f"{route.name}: transformer produced nothing")
                continue
        outputs.append((route.name, content))
    info = "; ".join(notes) or None
    if not outputs and channel.routes:
        return PipelineResult(FILTERED, transformed=transformed, filter_info=info or "no destination")
    return PipelineResult(TRANSFORMED, outputs=outputs, transformed=transformed, filter_info=info)
