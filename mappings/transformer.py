"""The transformer step of a channel: a Jinja template or a plugin (DESIGN.md §3.1, §3.3, §3.10).

Protocol: a transformer is any object with

    transform(self, msg: HL7Message, context: dict) -> str | None

``msg`` is the inbound message, ``context`` holds at least ``channel`` (the channel's
name). The return value is the outbound payload; ``None`` or an empty string means
"filter this message out of this route". A plain function ``(msg, context) -> str | None``
is accepted too and wrapped by :func:`load_plugin`.

Plugins are found by :func:`load_plugin` either by dotted path (``package.module:attr``
or ``package.module.attr``, Scrapy's ``load_object``) or by name in the entry point group
``radbridge.mappings``. Options from the configuration arrive as keyword arguments.
See ``mappings/PLUGINS.md`` for a worked example.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import jinja2

from engine.hl7.message import HL7Message

ENTRY_POINT_GROUP = "radbridge.mappings"


@runtime_checkable
class Transformer(Protocol):
    """Anything with ``transform(msg, context) -> str | None``."""

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Return the outbound payload, or ``None``/``""`` to filter the message out."""
        ...


class PluginLoadError(ValueError):
    """A mapping plugin could not be found, imported or built."""


class TransformError(RuntimeError):
    """A template failed while rendering one message (undefined variable, sandbox, bad path)."""

    def __init__(self, message: str, *, lineno: int | None = None, filename: str | None = None) -> None:
        self.lineno = lineno
        self.filename = filename
        super().__init__(message)


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """The template line a render error came from, from Jinja's rewritten traceback."""
    lineno = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if filename is not None and frame.filename == filename:
            lineno = frame.lineno
    return lineno


def normalise_hl7(text: str) -> str:
    """Join rendered lines with CR as HL7 segments, dropping blank lines; ``""`` if nothing is left."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\r".join([line for line in text.split("\n") if line.strip()]).strip()


class JinjaTransformer:
    """A transformer rendering a compiled, sandboxed Jinja template.

    The template sees ``msg`` (the :class:`HL7Message`), ``raw`` (its text), ``channel``
    and every key of ``context``. With ``output="hl7"`` lines are joined with CR and
    blank lines dropped; with ``output="text"`` the rendering is returned as is.
    """

    def __init__(self, template: jinja2.Template, output: Literal["hl7", "text"] = "hl7") -> None:
        if output not in ("hl7", "text"):
            raise ValueError(f"output must be 'hl7' or 'text', not {output!r}")
        self.template = template
        self.output = output
        # ``Template.render`` copies the template's globals (a ChainMap) into a new dict on every
        # call; a flat copy made once renders the same context for a fraction of the cost.
        self._globals = dict(template.globals)

    def render(self, variables: dict[str, Any]) -> str:
        """``template.render(variables)`` without re-flattening the globals each time."""
        return self._render({**self._globals, **variables})

    def _render(self, parent: dict[str, Any]) -> str:
        """Render with *parent* as the whole context (globals included)."""
        template = self.template
        env = template.environment
        ctx = env.context_class(env, parent, template.name, template.blocks, self._globals)
        try:
            return env.concat(template.root_render_func(ctx))  # type: ignore[attr-defined]
        except Exception:
            env.handle_exception()  # re-raises with the template's lines in the traceback
            raise

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Render the template for *msg*; ``None`` when the result is empty."""
        parent = {**self._globals, **context}
        parent["msg"], parent["raw"], parent["channel"] = msg, msg.text, context.get("channel", "")
        try:
            rendered = self._render(parent)
        except Exception as exc:
            name = self.template.filename or self.template.name
            lineno = _template_line(exc, self.template.filename)
            where = f"{name}:{lineno}" if lineno else str(name)
            raise TransformError(f"{where}: {type(exc).__name__}: {exc}", lineno=lineno, filename=name) from exc
        if self.output == "hl7":
            return normalise_hl7(rendered) or None
        return rendered if rendered.strip() else None


class FunctionTransformer:
    """Adapts a function ``(msg, context, **options) -> str | None`` to the transformer protocol."""

    def __init__(self, func: Callable[..., str | None], options: Mapping[str, Any] | None = None) -> None:
        self.func = func
        self.options = dict(options or {})

    def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
        """Call the wrapped function with the message, the context and the options."""
        return self.func(msg, context, **self.options)

    def __repr__(self) -> str:
        return f"FunctionTransformer({getattr(self.func, '__qualname__', self.func)!r})"


def _import_dotted(spec: str) -> object:
    """Import ``pkg.mod:attr`` (attr may be dotted) or ``pkg.mod.attr``."""
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
    else:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise PluginLoadError(f"mapping plugin {spec!r}: expected 'package.module:attr' or 'package.module.attr'")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginLoadError(f"mapping plugin {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginLoadError(
                f"mapping plugin {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    return obj


def _load_entry_point(name: str, entry_points: Iterable[importlib.metadata.EntryPoint] | None) -> object:
    """Load the entry point *name* of the ``radbridge.mappings`` group."""
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    candidates = [ep for ep in entry_points if ep.group == ENTRY_POINT_GROUP]
    for ep in candidates:
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:
                raise PluginLoadError(f"mapping plugin {name!r} ({ep.value}): cannot load: {exc}") from exc
    installed = ", ".join(sorted({ep.name for ep in candidates})) or "none installed"
    raise PluginLoadError(
        f"no mapping plugin named {name!r} in entry point group {ENTRY_POINT_GROUP!r} ({installed}); "
        "use 'package.module:attr' for a plugin that is not installed"
    )


def _check_call(func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], what: str) -> None:
    """Raise :class:`PluginLoadError` when *func* cannot be called with *args* and *kwargs*."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return  # builtins and C callables without a signature: trust them
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise PluginLoadError(f"{what}: wrong signature {signature}: {exc}") from None


def _build(obj: object, options: Mapping[str, Any], spec: str) -> Transformer:
    """Turn a loaded class, function or instance into a transformer."""
    if inspect.isclass(obj):
        if not callable(getattr(obj, "transform", None)):
            raise PluginLoadError(
                f"mapping plugin {spec!r}: class {obj.__name__} has no transform(msg, context) method"
            )
        _check_call(obj, (), options, f"mapping plugin {spec!r} options {sorted(options)}")
        try:
            instance = obj(**options)
        except Exception as exc:
            raise PluginLoadError(f"mapping plugin {spec!r}: {obj.__name__}(**options) failed: {exc}") from exc
        _check_call(instance.transform, (None, None), {}, f"mapping plugin {spec!r}: transform")
        return instance
    if callable(getattr(obj, "transform", None)):
        if options:
            raise PluginLoadError(
                f"mapping plugin {spec!r} is an instance; it takes no options (got {sorted(options)})"
            )
        _check_call(obj.transform, (None, None), {}, f"mapping plugin {spec!r}: transform")  # type: ignore[attr-defined]
        return obj  # type: ignore[return-value]
    if callable(obj):
        _check_call(obj, (None, None), options, f"mapping plugin {spec!r}: expected (msg, context, **options)")
        return FunctionTransformer(obj, options)
    raise PluginLoadError(
        f"mapping plugin {spec!r} is a {type(obj).__name__}, not a transformer class, function or object"
    )


def load_plugin(
    spec: str,
    options: Mapping[str, Any] | None = None,
    *,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> Transformer:
    """Load the transformer *spec*: a dotted path if it has ``:`` or ``.``, else a ``radbridge.mappings`` entry point.

    A class is instantiated with ``**options``; a function is wrapped and gets the options
    as keyword arguments on each call. *entry_points* replaces the installed ones (tests).
    """
    spec = spec.strip()
    if not spec:
        raise PluginLoadError("mapping plugin: empty name")
    obj = _import_dotted(spec) if (":" in spec or "." in spec) else _load_entry_point(spec, entry_points)
    return _build(obj, dict(options or {}), spec)


def _build_jinja(config: Any, ctx: Any) -> JinjaTransformer:
    """Render a sandboxed Jinja template (inline ``template`` or ``template_file``)."""
    from mappings.environment import compile_template, load_template

    if config.template_file:
        template = load_template(ctx.jinja_env, config.template_file)
    else:
        template = compile_template(ctx.jinja_env, config.template, name=f"{ctx.channel}:template")
    return JinjaTransformer(template, output=config.output)


def _build_plugin(config: Any, ctx: Any) -> Transformer:
    """A mapping plugin loaded by entry point name or dotted path."""
    return load_plugin(config.plugin, config.options)


def register(registry: Any) -> None:
    """Register the Jinja and plugin transformer types."""
    from engine.config.models import TransformerConfig

    registry.add("transformer", "jinja", TransformerConfig, _build_jinja)
    registry.add("transformer", "plugin", TransformerConfig, _build_plugin)
