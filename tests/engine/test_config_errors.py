"""Tests for placed config issues and mapping pydantic errors onto YAML positions."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.config.errors import ConfigError, ConfigIssue, Mark, dotted
from engine.config.yamlpos import load_yaml_string, pydantic_issues


class Strict(BaseModel):
    """Base for the test models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Mllp(Strict):
    """A tagged union member."""

    type: Literal["mllp_listener"]
    host: str = "0.0.0.0"
    port: int


class FileDrop(Strict):
    """The other tagged union member."""

    type: Literal["file_drop"]
    path: str


class Channel(Strict):
    """A channel with a discriminated source."""

    name: str
    source: Annotated[Mllp | FileDrop, Field(discriminator="type")]


class Root(Strict):
    """The top of the test config."""

    channels: list[Channel]
    workers: int | None = None


CONFIG = """\
channels:
  - name: adt
    source:
      type: mllp_listener
      prot: 2575
  - name: oru
    source:
      type: mllp_listener
      port: abc
  - source:
      type: file_drop
      path: /in
"""


def placed(text: str, *, model: type[BaseModel] | None = None) -> list[ConfigIssue]:
    """Load ``text`` as c.yaml, validate it with ``Root`` and return the placed issues."""
    data, positions, issues = load_yaml_string(text, "c.yaml")
    assert issues == []
    with pytest.raises(ValidationError) as info:
        Root.model_validate(data)
    return pydantic_issues(info.value, positions, model=model)


def formatted(text: str) -> list[str]:
    """The formatted placed issues of ``text``."""
    return [issue.format() for issue in placed(text)]


def test_mark_str_is_file_line_col() -> None:
    """A mark prints as ``file:line:col``."""
    assert str(Mark("a.yaml", 3, 7)) == "a.yaml:3:7"


def test_issue_format_variants() -> None:
    """Issues format with place and path; warnings are prefixed; no mark or path degrade gracefully."""
    mark = Mark("a.yaml", 3, 7)
    assert ConfigIssue(mark, "channels[0].name", "bad").format() == "a.yaml:3:7: channels[0].name: bad"
    assert ConfigIssue(mark, "x", "odd", "warning").format() == "a.yaml:3:7: x: warning: odd"
    assert ConfigIssue(None, "x", "bad").format() == "<config>: x: bad"
    assert ConfigIssue(mark, "", "bad").format() == "a.yaml:3:7: bad"


def test_config_error_lists_issues_and_counts_errors() -> None:
    """ConfigError keeps every issue and its text ends with the number of errors."""
    issues = [
        ConfigIssue(Mark("a.yaml", 1, 1), "a", "one"),
        ConfigIssue(Mark("a.yaml", 2, 1), "b", "two", "warning"),
        ConfigIssue(None, "", "three"),
    ]
    error = ConfigError(issues)
    assert error.issues == issues and error.errors == [issues[0], issues[2]]
    assert str(error) == "a.yaml:1:1: a: one\na.yaml:2:1: b: warning: two\n<config>: three\n2 errors"
    assert str(ConfigError(issues[:1])).endswith("\n1 error")


def test_dotted_paths() -> None:
    """Location tuples turn into dotted paths with list indexes in brackets."""
    assert dotted(("channels", 0, "source", "port")) == "channels[0].source.port"
    assert dotted(()) == ""
    assert dotted((0, "a", 1, 2)) == "[0].a[1][2]"


def test_pydantic_errors_are_placed_on_the_yaml() -> None:
    """Extra key → key's mark; wrong type → value's mark; missing field → parent mapping's mark; tags are dropped."""
    assert formatted(CONFIG) == [
        "c.yaml:4:7: channels[0].source.port: Field required",
        "c.yaml:5:7: channels[0].source.prot: unknown key 'prot'",
        "c.yaml:9:13: channels[1].source.port: Input should be a valid integer, unable to parse string as an integer",
        "c.yaml:10:5: channels[2].name: Field required",
    ]


def test_unknown_key_lists_allowed_keys_when_model_given() -> None:
    """With the model, the unknown-key message names the allowed keys of the right union member."""
    [first] = [issue for issue in placed(CONFIG, model=Root) if issue.path.endswith("prot")]
    assert first.message == "unknown key 'prot' (allowed: type, host, port)"
    assert first.mark == Mark("c.yaml", 5, 7)


def test_extra_key_with_nested_value_points_at_the_key() -> None:
    """An unknown key whose value is a block mapping is placed on the key, not the value below it."""
    issues = placed("channels: []\nextra:\n  a: 1\n", model=Root)
    assert [i.format() for i in issues] == ["c.yaml:2:1: extra: unknown key 'extra' (allowed: channels, workers)"]


def test_optional_union_scalar_member_names_are_dropped() -> None:
    """A union member name after a scalar (e.g. ``int``) is not part of the path."""
    assert formatted("channels: []\nworkers: many\n") == [
        "c.yaml:2:10: workers: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_prefix_places_errors_of_a_subtree() -> None:
    """Validating a sub-document with ``prefix`` yields full paths and the right marks."""
    data, positions, _ = load_yaml_string(CONFIG, "c.yaml")
    with pytest.raises(ValidationError) as info:
        Mllp.model_validate(data["channels"][1]["source"])
    issues = pydantic_issues(info.value, positions, ("channels", 1, "source"))
    assert [i.format() for i in issues] == [
        "c.yaml:9:13: channels[1].source.port: Input should be a valid integer, unable to parse string as an integer"
    ]


def test_bad_discriminator_points_at_the_source_mapping() -> None:
    """An unknown ``type:`` tag is placed on the tagged mapping."""
    text = "channels:\n  - name: a\n    source:\n      type: carrier_pigeon\n"
    issues = formatted(text)
    assert len(issues) == 1 and issues[0].startswith("c.yaml:4:7: channels[0].source: Input tag 'carrier_pigeon'")


class Outputs(Strict):
    """A model whose list items are themselves a discriminated union, plus a plain (smart) union."""

    destinations: list[Annotated[Mllp | FileDrop, Field(discriminator="type")]]
    fallback: Mllp | FileDrop | None = None


def test_discriminated_union_list_items_and_smart_union_members() -> None:
    """Tags inside list items and class names of smart-union members are stripped from the path."""
    text = "destinations:\n  - type: file_drop\n    path: 1\n    mode: x\nfallback:\n  type: file_drop\n"
    data, positions, _ = load_yaml_string(text, "o.yaml")
    with pytest.raises(ValidationError) as info:
        Outputs.model_validate(data)
    lines = [issue.format() for issue in pydantic_issues(info.value, positions, model=Outputs)]
    assert "o.yaml:3:11: destinations[0].path: Input should be a valid string" in lines
    assert "o.yaml:4:5: destinations[0].mode: unknown key 'mode' (allowed: type, path)" in lines
    assert "o.yaml:6:3: fallback.path: Field required" in lines
    assert all("file_drop" not in line.split(": ")[1] and "FileDrop" not in line for line in lines)
