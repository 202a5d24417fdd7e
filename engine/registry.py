"""One registry of component types keyed by the YAML ``type:`` (DESIGN.md §3.3).

Each entry is a name → (pydantic config model, ``build(config, ctx)``). Built-ins
and third parties register through the ``radbridge.components`` entry point group;
the engine never imports a connector by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from pydantic import BaseModel

#: ``service`` entries are engine-wide singletons built from a top-level config section (the
#: archive from ``archive:``); the engine asks for them by name and runs without them if absent.
Kind = Literal["source", "destination", "transformer", "service"]
KINDS: tuple[Kind, ...] = ("source", "destination", "transformer", "service")
ENTRY_POINT_GROUP = "radbridge.components"


@dataclass(frozen=True)
class ComponentType:
    """A registered component: its kind, YAML type name, config model and builder."""

    kind: Kind
    name: str
    model: type[BaseModel]
    build: Callable[[Any, Any], Any]
    description: str = ""
    #: runs inside the engine with no network or folder of its own (the RIS, ``channel``): ``radbridge
    #: test`` keeps it real instead of swapping it for a ``memory`` connector
    offline: bool = False


class DuplicateComponent(ValueError):
    """Two components of one kind registered under one name."""


class Registry:
    """Component types by kind and name."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], ComponentType] = {}

    def add(
        self, kind: Kind, name: str, model: type[BaseModel], build: Callable, description: str = "", *,
        offline: bool = False,
    ) -> None:  # fmt: skip
        """Register *build* for ``type: name`` of *kind* with its config *model* (*offline*: see ComponentType)."""
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}")
        key = (kind, name)
        existing = self._types.get(key)
        if existing is not None and existing.build is not build:
            raise DuplicateComponent(f"{kind} type {name!r} is registered twice")
        if not description and build.__doc__:
            description = build.__doc__.strip().splitlines()[0]
        self._types[key] = ComponentType(kind, name, model, build, description, offline)

    def component(self, kind: Kind, name: str, model: type[BaseModel]) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add`."""

        def deco(build: Callable) -> Callable:
            self.add(kind, name, model, build)
            return build

        return deco

    def get(self, kind: Kind, name: str) -> ComponentType:
        """The component type, or ``KeyError`` naming the known ones."""
        try:
            return self._types[(kind, name)]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise KeyError(f"unknown {kind} type {name!r} (known: {known})") from None

    def find(self, kind: Kind, name: str) -> ComponentType | None:
        """The component type, or ``None`` when nothing is registered under that name."""
        return self._types.get((kind, name))

    def names(self, kind: Kind) -> list[str]:
        """Registered type names of *kind*, sorted."""
        return sorted(n for k, n in self._types if k == kind)

    def types(self) -> list[ComponentType]:
        """Every registered component type."""
        return [self._types[k] for k in sorted(self._types)]

    def load_entry_points(self, eps: Iterable[EntryPoint] | None = None) -> None:
        """Call every ``radbridge.components`` entry point's ``register(registry)``."""
        for ep in eps if eps is not None else entry_points(group=ENTRY_POINT_GROUP):
            ep.load()(self)


def default_registry() -> Registry:
    """A registry holding every installed component type."""
    reg = Registry()
    reg.load_entry_points()
    return reg
