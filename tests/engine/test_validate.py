"""Config validation: every error collected, each with file:line:col and a dotted path."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine.config.errors import ConfigError
from engine.config.validate import validate_config
from engine.registry import Registry, default_registry

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _errors(path: Path, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(path, check_ports=False, **kw)
    return [issue.format() for issue in info.value.issues]


def test_example_config_is_valid():
    """The shipped config.example.yaml validates with the installed component types."""
    vc = validate_config(ROOT / "config.example.yaml", check_ports=False, environ={})
    names = [c.config.name for c in vc.channels]
    assert names == ["his-inbound", "legacy-drop", "dictation", "modality-images", "to-his", "to-ehr"]
    assert vc.ris.status_channel == "to-his" and vc.ris.report_channel == "to-ehr"
    assert vc.database_url.startswith("sqlite:///") and vc.database_url.endswith("radbridge.db")


def test_all_errors_collected_with_positions(tmp_path):
    """Several mistakes in one file are all reported, each at its own line."""
    path = _write(
        tmp_path,
        """\
channels:
  - name: a
    source:
      type: mllp_listener
      port: notaport
      prot: 1
    filter: 'MSH-9.1 = "ORM"'
    destinations:
      - name: d1
        type: carrier_pigeon
      - name: d2
        type: mllp_sender
        host: 127.0.0.1
        port: 7000
        transformer:
          template: |
            MSH|^~\\&|A
            {% for s in msg.segments %}
            {{ s }
            {% endfor %}
  - name: a
    source: {type: mllp_listener, port: 7001}
""",
    )
    lines = _errors(path)
    text = "\n".join(lines)
    assert f"{path}:5:13: channels[0].source.port:" in text
    assert f"{path}:6:7: channels[0].source.prot: unknown key 'prot'" in text
    assert f"{path}:7:" in text and "channels[0].filter" in text
    assert f"{path}:10:15: channels[0].destinations[0].type: unknown destination type 'carrier_pigeon'" in text
    assert any(line.startswith(f"{path}:19:") and "destinations[1].transformer.template" in line for line in lines)
    assert f"{path}:21:11: channels[1].name: channel name 'a' is used twice" in text


def test_missing_environment_variable_is_an_error(tmp_path):
    """A ${VAR} that is not set is reported at its scalar."""
    path = _write(tmp_path, "channels:\n  - name: a\n    source: {type: mllp_listener, port: '${NOPE_PORT}'}\n")
    lines = _errors(path, environ={})
    assert any(":3:" in line and "NOPE_PORT" in line for line in lines)


def test_environment_variable_fills_a_port(tmp_path):
    """${VAR} supplies a value that pydantic coerces to the field's type."""
    path = _write(tmp_path, "channels:\n  - name: a\n    source: {type: mllp_listener, port: '${P}'}\n")
    vc = validate_config(path, check_ports=False, environ={"P": "7123"})
    assert vc.channels[0].source.port == 7123


def test_template_file_error_points_into_the_template(tmp_path):
    """A syntax error in a template file is reported at that file's line."""
    (tmp_path / "t.j2").write_text("line one\n{{ ok }}\n{% if %}\n")
    path = _write(
        tmp_path,
        "channels:\n  - name: a\n    source: {type: mllp_listener, port: 7000}\n"
        "    transformer: {template_file: t.j2}\n",
    )
    lines = _errors(path)
    assert any(line.startswith(f"{tmp_path / 't.j2'}:3:") for line in lines), lines


def test_channel_destination_must_name_a_channel(tmp_path):
    """A ``channel`` destination pointing nowhere is an error at its ``channel`` key."""
    path = _write(
        tmp_path,
        "channels:\n  - name: a\n    source: {type: mllp_listener, port: 7000}\n"
        "    destinations:\n      - {name: x, type: channel, channel: nowhere}\n",
    )
    assert any(":5:" in line and "no channel named 'nowhere'" in line for line in _errors(path))


def test_busy_port_is_reported(tmp_path):
    """A listen port that is already bound is a validation error, so ``run`` never half-starts."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = _write(
            tmp_path,
            f"metrics: {{enabled: false}}\nchannels:\n  - name: a\n    source: {{type: mllp_listener, port: {port}}}\n",
        )
        with pytest.raises(ConfigError) as info:
            validate_config(path)
    assert "already in use" in str(info.value)


def test_include_merges_channel_lists(tmp_path):
    """Channels from included files are appended; their errors point into the included file."""
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.yaml").write_text("channels:\n  - name: b\n    source: {type: mllp_listener, port: x}\n")
    path = _write(
        tmp_path, "include: more/*.yaml\nchannels:\n  - name: a\n    source: {type: mllp_listener, port: 7000}\n"
    )
    lines = _errors(path)
    assert any(
        line.startswith(f"{tmp_path / 'more' / 'b.yaml'}:3:") and "channels[1].source.port" in line for line in lines
    )


def test_unknown_source_type_lists_known_types(tmp_path):
    """An unknown ``type`` names the registered ones."""
    path = _write(tmp_path, "channels:\n  - name: a\n    source: {type: telex}\n")
    assert any("mllp_listener" in line and "telex" in line for line in _errors(path))


def test_registry_rejects_duplicate_names():
    """Two different builders under one kind and name are refused."""
    from engine.config.models import ComponentConfig
    from engine.registry import DuplicateComponent

    reg = Registry()
    reg.add("source", "x", ComponentConfig, lambda c, ctx: None)
    with pytest.raises(DuplicateComponent):
        reg.add("source", "x", ComponentConfig, lambda c, ctx: 1)


def test_default_registry_has_the_builtin_types():
    """Entry points register every built-in connector and transformer."""
    reg = default_registry()
    assert {"mllp_listener", "file_drop", "memory"} <= set(reg.names("source"))
    assert {"mllp_sender", "file_writer", "channel", "memory"} <= set(reg.names("destination"))
    assert {"jinja", "plugin"} <= set(reg.names("transformer"))


def test_busy_admin_port_is_reported(tmp_path):
    """An enabled admin API on a port that is already bound is a validation error at ``admin.port``."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = _write(tmp_path, f"metrics: {{enabled: false}}\nadmin: {{enabled: true, port: {port}}}\nchannels: []\n")
        with pytest.raises(ConfigError) as info:
            validate_config(path)
    assert "admin.port" in str(info.value) and "already in use" in str(info.value)
