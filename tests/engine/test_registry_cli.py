"""The registry's service kind and subcommands contributed through entry points."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import BaseModel

from engine import cli
from engine.registry import Registry


class Cfg(BaseModel):
    """An empty config model."""


def test_find_returns_none_for_unregistered_services() -> None:
    """find() answers None instead of raising, so the engine runs without optional services."""
    reg = Registry()
    assert reg.find("service", "archive") is None

    def build(config: Any, ctx: Any) -> str:
        """Build the thing."""
        return "built"

    reg.add("service", "archive", Cfg, build)
    found = reg.find("service", "archive")
    assert found is not None and found.build(None, None) == "built" and found.description == "Build the thing."


def test_unknown_kind_is_refused() -> None:
    """Only the known kinds can be registered."""
    with pytest.raises(ValueError, match="unknown component kind"):
        Registry().add("widget", "x", Cfg, lambda c, x: None)  # type: ignore[arg-type]


class FakeEntryPoint:
    """An entry point whose register() adds a ``hello`` subcommand."""

    name = "hello"

    def load(self) -> Any:
        """The register function."""

        def register(sub: Any) -> None:
            p = sub.add_parser("hello", help="say hello")
            p.add_argument("--name", default="world")
            p.set_defaults(func=lambda args: 7 if args.name == "radbridge" else 0)

        return register


def test_subcommands_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packages add subcommands through the radbridge.commands group and main() dispatches to them."""
    monkeypatch.setattr(cli, "entry_points", lambda group: [FakeEntryPoint()] if group == cli.COMMANDS_GROUP else [])
    parser = cli.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    assert cli.main(["hello", "--name", "radbridge"]) == 7


def test_internal_source_is_registered_and_inert() -> None:
    """The internal source binds nothing; a channel using it is fed only by the engine."""
    from engine.chain import InternalSource, InternalSourceConfig
    from engine.registry import default_registry

    ctype = default_registry().get("source", "internal")
    assert ctype.model is InternalSourceConfig
    src = InternalSource(InternalSourceConfig(), type("Ctx", (), {"channel": "to-his"})())
    assert src.start(object()) is None and src.stop() is None
