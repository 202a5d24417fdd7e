"""Tests for loading mapping plugins by dotted path and by entry point."""

from __future__ import annotations

import sys
import tomllib
import types
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from engine.hl7.message import HL7Message
from mappings.transformer import ENTRY_POINT_GROUP, FunctionTransformer, PluginLoadError, Transformer, load_plugin

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "example_mapping_plugin"
ORM = "MSH|^~\\&|HIS|HOSP|RIS|RAD|20240131||ORM^O01|C1|P|2.3.1\rPID|1||123||van der Berg&x^Anna\\T\\Lou^^^dr~alias^b\rORC|NW"
UPPER = "MSH|^~\\&|HIS|HOSP|RIS|RAD|20240131||ORM^O01|C1|P|2.3.1\rPID|1||123||VAN DER BERG&X^ANNA\\T\\LOU^^^DR~ALIAS^B\rORC|NW"
EXAMPLE_EP = EntryPoint(name="uppercase_names", value="example_mapping_plugin:UppercaseNames", group=ENTRY_POINT_GROUP)


@pytest.fixture()
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the worked example importable, as if it were installed."""
    monkeypatch.syspath_prepend(str(FIXTURE))
    yield
    sys.modules.pop("example_mapping_plugin", None)


@pytest.fixture()
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A throwaway module holding function, instance and broken plugins."""
    module = types.ModuleType("fake_plugins")

    def tag_channel(msg: HL7Message, context: dict[str, Any], suffix: str = "") -> str | None:
        """Return the control id tagged with the channel, or None for ORC-1 CA."""
        if msg["ORC-1"] == "CA":
            return None
        return f"{context['channel']}:{msg.control_id}{suffix}"

    class Instance:
        def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
            return "instance"

    class NoTransform:
        pass

    class BadTransform:
        def transform(self, msg: HL7Message) -> str:
            return ""

    class Exploding:
        def __init__(self) -> None:
            raise RuntimeError("no licence")

        def transform(self, msg: HL7Message, context: dict[str, Any]) -> str | None:
            return None

    def one_arg(msg: HL7Message) -> str:
        return ""

    module.__dict__.update(
        tag_channel=tag_channel,
        instance=Instance(),
        NoTransform=NoTransform,
        BadTransform=BadTransform,
        Exploding=Exploding,
        one_arg=one_arg,
        not_callable=42,
    )
    monkeypatch.setitem(sys.modules, "fake_plugins", module)
    return module


def test_fixture_declares_the_entry_point_used_here() -> None:
    """The worked example's pyproject declares the entry point the tests simulate."""
    project = tomllib.loads((FIXTURE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][ENTRY_POINT_GROUP] == {"uppercase_names": EXAMPLE_EP.value}


@pytest.mark.parametrize("spec", ["example_mapping_plugin:UppercaseNames", "example_mapping_plugin.UppercaseNames"])
def test_load_example_by_dotted_path(example_on_path: None, spec: str) -> None:
    """The example loads by colon or dot path and upper-cases PID-5 keeping escapes."""
    plugin = load_plugin(spec)
    assert isinstance(plugin, Transformer)
    assert plugin.transform(HL7Message(ORM), {"channel": "c"}) == UPPER


def test_load_example_by_entry_point_with_options(example_on_path: None) -> None:
    """The example loads by entry point name and receives options as keyword arguments."""
    plugin = load_plugin("uppercase_names", {"prefix": "x-"}, entry_points=[EXAMPLE_EP])
    result = plugin.transform(HL7Message(ORM), {"channel": "c"})
    assert result is not None and "||x-VAN DER BERG&X^ANNA" in result.split("\r")[1]


def test_example_leaves_messages_without_pid_alone(example_on_path: None) -> None:
    """Segments other than PID pass through unchanged."""
    text = "MSH|^~\\&|A|B\rORC|NW|x"
    assert load_plugin("uppercase_names", entry_points=[EXAMPLE_EP]).transform(HL7Message(text), {}) == text


def test_entry_point_in_other_group_is_ignored(example_on_path: None) -> None:
    """Entry points of other groups do not count."""
    other = EntryPoint(name="uppercase_names", value=EXAMPLE_EP.value, group="radbridge.components")
    with pytest.raises(PluginLoadError, match="none installed"):
        load_plugin("uppercase_names", entry_points=[other])


def test_unknown_entry_point_lists_installed() -> None:
    """An unknown name says which plugins are installed."""
    with pytest.raises(PluginLoadError, match=r"no mapping plugin named 'nope'.*\(uppercase_names\)"):
        load_plugin("nope", entry_points=[EXAMPLE_EP])


def test_installed_entry_points_are_searched_by_default() -> None:
    """Without an explicit list, the installed radbridge.mappings group is searched."""
    with pytest.raises(PluginLoadError, match="no mapping plugin named 'surely_not_installed_xyz'"):
        load_plugin("surely_not_installed_xyz")


def test_entry_point_that_fails_to_import() -> None:
    """An entry point whose module is missing reports the import error."""
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Thing", group=ENTRY_POINT_GROUP)
    with pytest.raises(PluginLoadError, match="'broken'.*no_such_module_xyz"):
        load_plugin("broken", entry_points=[broken])


def test_function_plugin_gets_options_per_call(plugin_module: types.ModuleType) -> None:
    """A function plugin is wrapped and called with msg, context and the options."""
    plugin = load_plugin("fake_plugins:tag_channel", {"suffix": "!"})
    assert isinstance(plugin, FunctionTransformer)
    assert plugin.transform(HL7Message(ORM), {"channel": "orders"}) == "orders:C1!"
    assert plugin.transform(HL7Message(ORM.replace("ORC|NW", "ORC|CA")), {"channel": "orders"}) is None


def test_instance_plugin_is_used_as_is(plugin_module: types.ModuleType) -> None:
    """An object with transform is returned unchanged."""
    assert load_plugin("fake_plugins.instance") is plugin_module.instance


@pytest.mark.parametrize(
    ("spec", "options", "match"),
    [
        ("no_such_module_xyz:Thing", None, "cannot import module 'no_such_module_xyz'"),
        ("fake_plugins:missing", None, "has no attribute 'missing'"),
        ("fake_plugins:", None, "expected 'package.module:attr'"),
        (".tag_channel", None, "expected 'package.module:attr'"),
        ("fake_plugins:NoTransform", None, "has no transform"),
        ("fake_plugins:BadTransform", None, "transform: wrong signature"),
        ("fake_plugins:Exploding", None, "failed: no licence"),
        ("fake_plugins:one_arg", None, "wrong signature"),
        ("fake_plugins:tag_channel", {"colour": "red"}, "wrong signature"),
        ("fake_plugins:instance", {"a": 1}, "takes no options"),
        ("fake_plugins:not_callable", None, "is a int, not a transformer"),
        ("   ", None, "empty name"),
    ],
)
def test_plugin_errors(plugin_module: types.ModuleType, spec: str, options: dict | None, match: str) -> None:
    """Bad specs, missing attributes, wrong signatures and failing constructors raise PluginLoadError."""
    with pytest.raises(PluginLoadError, match=match):
        load_plugin(spec, options)


def test_class_plugin_rejects_unknown_options(example_on_path: None) -> None:
    """Options the class does not accept are a load error naming them."""
    with pytest.raises(PluginLoadError, match=r"options \['colour'\].*wrong signature"):
        load_plugin("uppercase_names", {"colour": "red"}, entry_points=[EXAMPLE_EP])


def test_plugin_load_error_is_a_value_error() -> None:
    """PluginLoadError is a ValueError so config validation can collect it."""
    assert issubclass(PluginLoadError, ValueError)
