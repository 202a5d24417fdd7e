"""The sandboxed Jinja environment mappings render in (DESIGN.md §3.10).

Templates see the HL7 message as ``msg``; ``msg["PID-5.1"]`` goes through
:meth:`HL7Message.__getitem__`, which the sandbox allows, while dunder and
private attributes (``''.__class__``, ``msg._segments``) raise ``SecurityError``.
Unknown variables raise (``StrictUndefined``) instead of rendering as ``""``.
Templates are compiled when the configuration is validated, so syntax errors
surface as :class:`TemplateCompileError` with the line number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.filters
from jinja2.sandbox import SandboxedEnvironment

from mappings.filters import FILTERS, GLOBALS

STOCK_TEMPLATES = Path(__file__).resolve().parent / "templates"


class TemplateCompileError(ValueError):
    """A mapping template failed to compile (syntax error, unknown filter, missing file)."""

    def __init__(self, message: str, *, lineno: int | None = None, filename: str | None = None) -> None:
        self.message = message
        self.lineno = lineno
        self.filename = filename
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.filename or "<template>"
        if self.lineno is not None:
            where += f":{self.lineno}"
        return f"{where}: {self.message}"


class MappingSandbox(SandboxedEnvironment):
    """Jinja's sandbox, remembering which (type, attribute) pairs it has already found safe.

    The stock checks (:meth:`is_safe_attribute`, ``is_internal_attribute``) depend only on the
    object's type and the attribute's name, so the answer is cached per pair; ``format`` and
    ``format_map`` are never cached (the sandbox wraps ``str.format`` by value), and calls are
    still checked on every call. A subclass whose ``is_safe_attribute`` looks at values must
    set ``cache_attributes = False``.
    """

    cache_attributes = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._safe_attributes: set[tuple[type, str]] = set()

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute`` under the sandbox's rules; a known-safe pair skips the checks."""
        if (type(obj), attribute) in self._safe_attributes:
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        value = super().getattr(obj, attribute)
        if (
            self.cache_attributes
            and attribute not in _UNCACHED
            and not isinstance(value, jinja2.Undefined)
            and hasattr(obj, attribute)
            and self.is_safe_attribute(obj, attribute, value)
            and len(self._safe_attributes) < _CACHE_LIMIT
        ):
            self._safe_attributes.add((type(obj), attribute))
        return value


_UNCACHED = frozenset({"format", "format_map"})

#: Jinja's built-in filters that have an async twin are wrapped to pick one on every call;
#: this environment is never async, so it registers the synchronous implementations directly.
SYNC_BUILTINS = {
    name: getattr(jinja2.filters, f"sync_do_{name}")
    for name in jinja2.filters.FILTERS
    if hasattr(jinja2.filters, f"sync_do_{name}")
}
_CACHE_LIMIT = 4096


def make_environment(search_paths: list[str] | None = None) -> SandboxedEnvironment:
    """A sandboxed, strict Jinja environment loading from *search_paths*, then the stock templates."""
    paths = [*(search_paths or []), str(STOCK_TEMPLATES)]
    env = MappingSandbox(
        loader=jinja2.FileSystemLoader(paths),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(SYNC_BUILTINS)
    env.filters.update(FILTERS)
    env.globals.update(GLOBALS)
    return env


def _compile_error(exc: jinja2.TemplateSyntaxError, fallback: str) -> TemplateCompileError:
    """Turn a Jinja syntax error into a :class:`TemplateCompileError` keeping its place."""
    return TemplateCompileError(
        exc.message or str(exc), lineno=exc.lineno, filename=exc.filename or exc.name or fallback
    )


def compile_template(env: jinja2.Environment, source: str, *, name: str = "<inline>") -> jinja2.Template:
    """Compile template *source*; errors raise :class:`TemplateCompileError` naming *name* and the line."""
    try:
        code = env.compile(source, name=name, filename=name)
    except jinja2.TemplateSyntaxError as exc:
        raise _compile_error(exc, name) from exc
    return env.template_class.from_code(env, code, env.make_globals(None))


def load_template(env: jinja2.Environment, filename: str) -> jinja2.Template:
    """Load and compile *filename* (relative to the search paths); errors raise :class:`TemplateCompileError`."""
    try:
        return env.get_template(filename)
    except jinja2.TemplateSyntaxError as exc:
        raise _compile_error(exc, filename) from exc
    except jinja2.TemplateNotFound as exc:
        searched = getattr(env.loader, "searchpath", [])
        message = f"template not found (searched {', '.join(searched) or 'nothing'})"
        raise TemplateCompileError(message, filename=filename) from exc
