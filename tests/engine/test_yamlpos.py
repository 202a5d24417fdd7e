"""Tests for position-keeping YAML loading: marks, env substitution, includes, syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.errors import Mark
from engine.config.yamlpos import PositionMap, expand_env, load_yaml, load_yaml_string

DOC = """\
name: demo
channels:
  - name: adt
    source:
      type: mllp_listener
      port: 2575
  - name: oru
    tags: [a, b]
"""


def write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def messages(issues: list) -> list[str]:
    """The formatted issues, for compact assertions."""
    return [issue.format() for issue in issues]


def test_plain_data_is_constructed_with_resolved_scalar_types() -> None:
    """Mappings become dicts, sequences lists, and scalars get their YAML types."""
    data, _, issues = load_yaml_string("a: 1\nb: true\nc: 1.5\nd: ~\ne: text\nf: '7'\n")
    assert issues == []
    assert data == {"a": 1, "b": True, "c": 1.5, "d": None, "e": "text", "f": "7"}


def test_positions_of_nested_mappings_and_lists_are_exact() -> None:
    """Every value's 1-based line and column is recorded under its location tuple."""
    data, pos, issues = load_yaml_string(DOC, "c.yaml")
    assert issues == [] and data["channels"][1]["tags"] == ["a", "b"]
    assert pos.value_marks[()] == Mark("c.yaml", 1, 1)
    assert pos.value_marks[("name",)] == Mark("c.yaml", 1, 7)
    assert pos.value_marks[("channels",)] == Mark("c.yaml", 3, 3)
    assert pos.value_marks[("channels", 0)] == Mark("c.yaml", 3, 5)
    assert pos.value_marks[("channels", 0, "source", "port")] == Mark("c.yaml", 6, 13)
    assert pos.value_marks[("channels", 1, "tags", 1)] == Mark("c.yaml", 8, 15)


def test_key_marks_are_recorded_separately_from_value_marks() -> None:
    """A mapping key has its own mark; lookup(key=True) prefers it, plain lookup gives the value."""
    _, pos, _ = load_yaml_string(DOC, "c.yaml")
    loc = ("channels", 0, "source")
    assert pos.key_marks[loc] == Mark("c.yaml", 4, 5)
    assert pos.lookup(loc) == Mark("c.yaml", 5, 7)
    assert pos.lookup(loc, key=True) == Mark("c.yaml", 4, 5)
    assert pos.lookup(("channels", 0), key=True) == Mark("c.yaml", 3, 5)


def test_lookup_falls_back_to_the_nearest_existing_ancestor() -> None:
    """A location missing from the data resolves to its closest recorded ancestor."""
    _, pos, _ = load_yaml_string(DOC, "c.yaml")
    assert pos.lookup(("channels", 0, "source", "host")) == Mark("c.yaml", 5, 7)
    assert pos.lookup(("channels", 0, "source", "host"), key=True) == Mark("c.yaml", 5, 7)
    assert pos.lookup(("nothing", "here")) == Mark("c.yaml", 1, 1)
    assert PositionMap("empty.yaml").lookup(("x",)) == Mark("empty.yaml", 1, 1)


def test_duplicate_keys_are_an_error_at_the_second_key() -> None:
    """A key repeated in one mapping is reported with the line of its first occurrence."""
    data, _, issues = load_yaml_string("a:\n  name: x\n  port: 1\n  name: y\n", "d.yaml")
    assert data == {"a": {"name": "x", "port": 1}}
    assert messages(issues) == ["d.yaml:4:3: a.name: duplicate key 'name' (first at line 2)"]


def test_merge_keys_copy_anchor_values_and_keep_anchor_positions() -> None:
    """``<<: *anchor`` merges keys (explicit keys win) and points merged keys at the anchor."""
    text = "base: &b\n  host: h\n  port: 1\nother:\n  <<: *b\n  port: 2\n"
    data, pos, issues = load_yaml_string(text, "m.yaml")
    assert issues == []
    assert data["other"] == {"host": "h", "port": 2}
    assert pos.lookup(("other", "host")) == Mark("m.yaml", 2, 9)
    assert pos.lookup(("other", "port")) == Mark("m.yaml", 6, 9)


def test_empty_file_gives_an_empty_mapping() -> None:
    """An empty (or comment-only) document loads as ``{}`` without issues."""
    assert load_yaml_string("# nothing\n")[0::2] == ({}, [])


def test_top_level_must_be_a_mapping() -> None:
    """A document whose top level is a list is reported and yields ``{}``."""
    data, _, issues = load_yaml_string("- a\n- b\n", "l.yaml")
    assert data == {}
    assert messages(issues) == ["l.yaml:1:1: the top level must be a mapping"]


def test_syntax_error_becomes_an_issue_at_the_problem_mark() -> None:
    """A YAML syntax error is collected with its line, column and problem text."""
    data, _, issues = load_yaml_string("a:\n  b: 1\n - c\n", "s.yaml")
    assert data == {}
    assert len(issues) == 1 and issues[0].mark == Mark("s.yaml", 3, 2)
    assert "expected <block end>" in issues[0].message


def test_bad_scalar_and_unknown_tag_are_issues() -> None:
    """A scalar that cannot be constructed, or an unknown tag, is an issue at that scalar."""
    data, _, issues = load_yaml_string("a: !foo 1\nb: 2024-13-45\n", "t.yaml")
    assert data == {"a": None, "b": None}
    assert [(i.path, i.mark.line) for i in issues] == [("a", 1), ("b", 2)]


def test_env_substitution_with_default_and_escape() -> None:
    """``${VAR}``, ``${VAR:-default}`` and ``$${`` are expanded in string scalars only."""
    text = "port: ${PORT}\nhost: ${HOST:-localhost}\nempty: ${EMPTY:-dflt}\nlit: $${HOME}\nn: 5\nmix: a-${PORT}-b\n"
    env = {"PORT": "2575", "EMPTY": ""}
    data, _, issues = load_yaml_string(text, environ=env)
    assert issues == []
    assert data == {"port": "2575", "host": "localhost", "empty": "dflt", "lit": "${HOME}", "n": 5, "mix": "a-2575-b"}


def test_env_substitution_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``environ`` the process environment is used."""
    monkeypatch.setenv("RADBRIDGE_TEST_VAR", "from-env")
    assert load_yaml_string("x: ${RADBRIDGE_TEST_VAR}\n")[0] == {"x": "from-env"}


def test_missing_env_var_is_collected_at_the_scalar_mark() -> None:
    """Unset variables without a default become issues (all of them), not exceptions."""
    text = 'a:\n  b: ${NOPE}\n  c: "x ${ALSO_NOPE}"\n'
    data, _, issues = load_yaml_string(text, "e.yaml", environ={})
    assert data == {"a": {"b": "", "c": "x "}}
    assert messages(issues) == [
        "e.yaml:2:6: a.b: environment variable NOPE is not set",
        "e.yaml:3:6: a.c: environment variable ALSO_NOPE is not set",
    ]


def test_expand_env_reports_malformed_references() -> None:
    """Bad names and unterminated references are reported and left as written."""
    assert expand_env("${1X}", {})[1] == ["invalid environment variable reference '${1X}'"]
    text, problems = expand_env("a ${B", {})
    assert text == "a ${B" and "unterminated" in problems[0]


def test_include_glob_concatenates_lists_and_renumbers_positions(tmp_path: Path) -> None:
    """Included files' lists are appended in sorted order; positions point into the included file."""
    main = write(tmp_path / "main.yaml", "include: channels/*.yaml\nchannels:\n  - name: first\n")
    write(tmp_path / "channels" / "b.yaml", "channels:\n  - name: b1\n")
    write(tmp_path / "channels" / "a.yaml", "channels:\n  - name: a1\n  -   name: a2\nstore:\n  url: x\n")
    data, pos, issues = load_yaml(main)
    assert issues == []
    assert [c["name"] for c in data["channels"]] == ["first", "a1", "a2", "b1"]
    assert data["store"] == {"url": "x"} and "include" not in data
    a_file, b_file = str(tmp_path / "channels" / "a.yaml"), str(tmp_path / "channels" / "b.yaml")
    assert pos.lookup(("channels", 0, "name")) == Mark(str(main), 3, 11)
    assert pos.lookup(("channels", 2, "name")) == Mark(a_file, 3, 13)
    assert pos.lookup(("channels", 3)) == Mark(b_file, 2, 5)
    assert pos.lookup(("store", "url"), key=True) == Mark(a_file, 5, 3)
    assert pos.lookup(("include",)) == Mark(str(main), 1, 1)


def test_include_list_nested_includes_and_renumbered_issues(tmp_path: Path) -> None:
    """Includes nest; an issue inside an included list item carries the merged index and its file."""
    main = write(tmp_path / "main.yaml", "include: [one.yaml]\nchannels:\n  - name: m\n")
    write(tmp_path / "one.yaml", "include: sub/two.yaml\nchannels:\n  - name: o\n")
    two = write(tmp_path / "sub" / "two.yaml", "channels:\n  - name: t\n    port: ${MISSING}\n")
    data, pos, issues = load_yaml(main, environ={})
    assert [c["name"] for c in data["channels"]] == ["m", "o", "t"]
    assert pos.lookup(("channels", 2, "port")) == Mark(str(two), 3, 11)
    assert messages(issues) == [f"{two}:3:11: channels[2].port: environment variable MISSING is not set"]


def test_include_merges_mappings_and_reports_conflicting_scalars(tmp_path: Path) -> None:
    """Mappings merge recursively; the includer's scalar wins and a different included one is an error."""
    main = write(tmp_path / "main.yaml", "include: extra.yaml\nstore:\n  url: a\n  pool: 2\n")
    extra = write(tmp_path / "extra.yaml", "store:\n  url: b\n  pool: 2\n  echo: true\n")
    data, pos, issues = load_yaml(main)
    assert data == {"store": {"url": "a", "pool": 2, "echo": True}}
    assert pos.lookup(("store", "url")) == Mark(str(main), 3, 8)
    assert messages(issues) == [f"{extra}:2:8: store.url: conflicts with {main}:3"]


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    """A file including itself through another file is reported, not looped on."""
    a = write(tmp_path / "a.yaml", "include: b.yaml\nx: 1\n")
    b = write(tmp_path / "b.yaml", "include: a.yaml\ny: 2\n")
    data, _, issues = load_yaml(a)
    assert data == {"x": 1, "y": 2}
    assert messages(issues) == [f"{b}:1:10: include: include cycle: {a} -> {b} -> {a}"]


def test_include_missing_file_and_unmatched_pattern_are_errors(tmp_path: Path) -> None:
    """A missing included file and a glob matching nothing are both reported at their entry."""
    main = write(tmp_path / "main.yaml", "include:\n  - nope.yaml\n  - conf.d/*.yaml\n")
    data, _, issues = load_yaml(main)
    assert data == {}
    assert [(i.mark, i.path) for i in issues] == [
        (Mark(str(main), 2, 5), "include[0]"),
        (Mark(str(main), 3, 5), "include[1]"),
    ]
    assert "not found" in issues[0].message and "matched no files" in issues[1].message


def test_include_must_be_string_or_list_of_strings(tmp_path: Path) -> None:
    """A mapping under ``include:`` is rejected."""
    _, _, issues = load_yaml_string("include: {a: 1}\n", str(tmp_path / "m.yaml"))
    assert [i.message for i in issues] == ["must be a string or a list of strings"]


def test_syntax_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    """A YAML error inside an included file is reported with the included file's name."""
    main = write(tmp_path / "main.yaml", "include: bad.yaml\n")
    bad = write(tmp_path / "bad.yaml", "a: [1\n")
    _, _, issues = load_yaml(main)
    assert len(issues) == 1 and issues[0].mark.file == str(bad)


def test_unreadable_main_file_is_an_issue(tmp_path: Path) -> None:
    """A config file that does not exist yields one issue and empty data."""
    data, _, issues = load_yaml(tmp_path / "missing.yaml")
    assert data == {} and len(issues) == 1 and "cannot read" in issues[0].message
