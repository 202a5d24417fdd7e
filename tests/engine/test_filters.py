"""Tests for the channel filter expression language (engine.filters)."""

from __future__ import annotations

import pytest

from engine.filters import Filter, FilterSyntaxError, compile_filter, compile_filters, describe_failure
from engine.hl7.message import FieldPath, HL7Message

SEGMENTS = [
    r"MSH|^~\&|RIS|HOSP|PACS|HOSP|20240101120000||ORM^O01|MSG001|P|2.5",
    "PID|1||1234567^^^MRN~X99^^^ALT||DOE^JOHN",
    "PV1|1|O",
    "ORC|NW|PLACER1",
    "OBR|1|PLACER1||CT123^CT HEAD WO^L",
    "OBX|1|NM|WT||72.5",
    "OBX|2|ST|NOTE||has x inside",
    "OBX|3|NM|AGE||9",
]


@pytest.fixture
def msg() -> HL7Message:
    """A small ORM^O01 message with three OBX segments."""
    return HL7Message("\r".join(SEGMENTS))


def check(expr: str, msg: HL7Message) -> bool:
    """Compile *expr* and evaluate it against *msg*."""
    return compile_filter(expr)(msg)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('MSH-9.1 == "ORM"', True),
        ('MSH-9.1 == "ADT"', False),
        ('PV1-2 != "E"', True),
        ('PV1-2 != "O"', False),
        ('ORC-1 in ["NW", "XO"]', True),
        ("ORC-1 in ['CA', 'DC']", False),
        ('ORC-1 not in ["CA", "DC"]', True),
        ('ORC-1 not in ["NW"]', False),
        ("ORC-1 in []", False),
        ('ORC-1 in["NW"]', True),
        ('PID-3.1 matches "^[0-9]{6,10}$"', True),
        ('PID-3.1 matches "^[0-9]{8,10}$"', False),
        (r'PID-3.1 matches "^\d+$"', True),
        ('OBR-4.1 startswith "CT"', True),
        ('OBR-4.1 startswith "MR"', False),
        ('OBR-4.2 endswith "WO"', True),
        ('OBR-4.2 endswith "W"', False),
        ('OBX[2]-5 contains "x"', True),
        ('OBX[1]-5 contains "x"', False),
        ("exists PID-5.1", True),
        ("exists OBR-18", False),
        ("exists PID", True),
        ("OBR-18 is empty", True),
        ("PID-5.1 is empty", False),
        ("PID-5.1 is not empty", True),
        ("OBR-18 is not empty", False),
        ("true", True),
        ("false", False),
    ],
)
def test_operators(expr: str, expected: bool, msg: HL7Message) -> None:
    """Each operator evaluates true and false on the sample message."""
    assert check(expr, msg) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("true or false and false", True),
        ("false and true or true", True),
        ("(true or false) and false", False),
        ("not true or true", True),
        ("not (true or true)", False),
        ("not false and false", False),
        ("not not true", True),
        ("((true))", True),
        ('MSH-9.1 == "ORM" and (ORC-1 in ["NW","XO"] or not exists OBR-18)', True),
        ('MSH-9.1 == "ORM" and (ORC-1 in ["CA"] or exists OBR-18)', False),
    ],
)
def test_precedence_and_parentheses(expr: str, expected: bool, msg: HL7Message) -> None:
    """``not`` binds tighter than ``and``, which binds tighter than ``or``; parentheses override."""
    assert check(expr, msg) is expected


@pytest.mark.parametrize(
    "expr",
    [
        'MSH-9.1 == "ORM" AND ORC-1 IN ["NW"]',
        "NOT Exists OBR-18 Or FALSE",
        "TRUE and PID-5.1 IS NOT EMPTY",
        'ORC-1 NOT IN ["CA"] and OBR-4.1 StartsWith "CT" and PID-3.1 MATCHES "7$"',
    ],
)
def test_keywords_are_case_insensitive(expr: str, msg: HL7Message) -> None:
    """Keywords may be written in any case."""
    assert check(expr, msg) is True


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('ZZZ-1 == ""', True),
        ('ZZZ-1 != "x"', True),
        ("exists ZZZ-1", False),
        ("OBX[9]-5 is empty", True),
        ("IN1-1 is empty and not exists IS1 and not exists ORX", True),
        ('PID-99.3 in [""]', True),
        ('PID-3[5].1 contains "1"', False),
    ],
)
def test_missing_fields_read_as_empty(expr: str, expected: bool, msg: HL7Message) -> None:
    """Absent segments, fields, repetitions and components read as ``""``."""
    assert check(expr, msg) is expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("OBX[3]-5 < 10", True),  # numeric: 9 < 10 (string compare would say False)
        ('OBX[3]-5 < "10"', True),
        ("OBX[3]-5 >= 9.0", True),
        ("OBX[1]-5 > 72.4", True),
        ("OBX[1]-5 <= 72.5", True),
        ("OBX[1]-5 > -1", True),
        ("OBX[1]-5 < .5", False),
        ('OBX[2]-5 > "a"', True),  # not a number: string compare
        ("OBX[2]-5 > 5", True),  # "has x inside" > "5" as strings
        ('PV1-2 >= "O"', True),
        ('PV1-2 < "O"', False),
    ],
)
def test_ordering_comparisons(expr: str, expected: bool, msg: HL7Message) -> None:
    """Ordering is numeric when both sides are numbers, else a string comparison."""
    assert check(expr, msg) is expected


def test_equality_is_string_equality(msg: HL7Message) -> None:
    """``==`` compares text exactly, even for numeric-looking values."""
    assert check("OBX[3]-5 == 9", msg) is True
    assert check("OBX[3]-5 == 9.0", msg) is False


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('MSH-9 == "ORM^O01"', True),
        ('MSH-9 == "ORM"', False),
        ('PID-3 contains "~X99"', True),
        ('PID-3[2].1 == "X99"', True),
        ('PID-5 == "DOE^JOHN"', True),
    ],
)
def test_path_without_component_compares_whole_field(expr: str, expected: bool, msg: HL7Message) -> None:
    """A path with no component compares the raw field, components and repetitions included."""
    assert check(expr, msg) is expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r'"a\"b"', 'a"b'),
        (r"'it\'s'", "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"tab\there"', "tab\there"),
        (r'"\d"', r"\d"),
    ],
)
def test_string_literals(literal: str, value: str) -> None:
    """Single and double quotes work; backslash escapes are decoded, unknown ones kept."""
    stub = StubMessage({"ZZZ-1": value})
    assert compile_filter(f"ZZZ-1 == {literal}")(stub) is True


class StubMessage:
    """A duck-typed message: anything with ``get(FieldPath, default)`` can be filtered."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, path: FieldPath, default: str = "") -> str:
        """Look the path up by its string form."""
        return self.values.get(str(path), default)


@pytest.mark.parametrize(
    ("expr", "column", "fragment"),
    [
        ("", 1, "empty filter expression"),
        ("   ", 1, "empty filter expression"),
        ('MSH-9 == "ORM', 10, "unterminated string"),
        ("MSH-9 == 'ORM\\'", 10, "unterminated string"),
        ('MSH-9 = "ORM"', 7, "unknown operator '='"),
        ('MSH-9 <> "ORM"', 7, "unknown operator '<>'"),
        ('MSH-9 like "ORM"', 7, "expected an operator after 'MSH-9'"),
        ('PID5 == "x"', 1, "invalid HL7 field path 'PID5'"),
        ('true and PID-0 == "x"', 10, "indexes start at 1"),
        ('PID-3[x] == "1"', 1, "invalid HL7 field path"),
        ('PID-3 matches "[0-9"', 15, "invalid regular expression"),
        ('MSH-9 == "ORM" foo', 16, "unexpected 'foo' after a complete expression"),
        ("true false", 6, "unexpected 'false'"),
        ('(MSH-9 == "ORM"', 16, "expected ')' to close '(' at column 1, got end of expression"),
        ("MSH-9 == ORM", 10, "quote strings"),
        ("MSH-9 ==", 9, "expected a string or number after '==', got end of expression"),
        ('ORC-1 in "NW"', 10, "expected a list"),
        ('ORC-1 in ["NW",]', 16, "expected a string or number after ','"),
        ('ORC-1 in ["NW" "XO"]', 16, "expected ',' or ']'"),
        ('ORC-1 not ["NW"]', 11, "expected 'in' after 'not'"),
        ('PV1-2 is "E"', 10, "expected 'empty' after 'is'"),
        ("OBR-4 startswith CT", 18, "expected a quoted string after 'startswith'"),
        ("exists", 7, "expected a field path (e.g. PID-5.1) after 'exists'"),
        ('and MSH-9 == "x"', 1, "expected a field path, 'not', 'exists'"),
        ("true && true", 6, "use 'and'"),
        ("true $ true", 6, "unexpected character '$'"),
    ],
)
def test_syntax_errors(expr: str, column: int, fragment: str) -> None:
    """Bad expressions fail at compile time with a clear message and a 1-based column."""
    with pytest.raises(FilterSyntaxError) as info:
        compile_filter(expr)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.column == column
    assert fragment in str(err)
    assert str(err).endswith(f"at column {column}")
    assert err.expression == expr


def test_paths_collected_and_normalised() -> None:
    """``paths`` holds every referenced field path in canonical form."""
    flt = compile_filter('MSH-9.1 == "ORM" and (OBX[1]-5 > 3 or not exists OBR-18) or PID-3[2].1 matches "x" or true')
    assert flt.paths == frozenset({"MSH-9.1", "OBX-5", "OBR-18", "PID-3[2].1"})
    assert compile_filter("true").paths == frozenset()


def test_filter_attributes(msg: HL7Message) -> None:
    """A Filter keeps its source; ``evaluate`` and calling it agree."""
    flt = compile_filter('MSH-9.1 == "ORM"')
    assert isinstance(flt, Filter)
    assert flt.source == 'MSH-9.1 == "ORM"'
    assert flt.evaluate(msg) is flt(msg) is True
    assert "MSH-9.1" in repr(flt)


@pytest.mark.parametrize("exprs", [None, []])
def test_compile_filters_empty(exprs: list[str] | None) -> None:
    """No expressions means no filter."""
    assert compile_filters(exprs) is None


def test_compile_filters_single_string(msg: HL7Message) -> None:
    """A single string compiles as one filter."""
    flt = compile_filters('ORC-1 == "NW"')
    assert flt is not None and flt(msg) is True


@pytest.mark.parametrize(
    ("exprs", "expected"),
    [
        (['MSH-9.1 == "ORM"', 'ORC-1 in ["NW"]'], True),
        (['MSH-9.1 == "ORM"', 'ORC-1 in ["CA"]'], False),
        (["false", "true"], False),
        (["true or false", "true"], True),
        (["exists PID"], True),
    ],
)
def test_compile_filters_list_is_and(exprs: list[str], expected: bool, msg: HL7Message) -> None:
    """A list of expressions passes only when every one does."""
    flt = compile_filters(exprs)
    assert flt is not None
    assert flt(msg) is expected


def test_compile_filters_list_paths_and_source() -> None:
    """The combined filter unions paths and keeps each expression's precedence."""
    flt = compile_filters(['MSH-9.1 == "ORM"', "true or exists OBR-18"])
    assert flt is not None
    assert flt.paths == frozenset({"MSH-9.1", "OBR-18"})
    assert flt.source == '(MSH-9.1 == "ORM") and (true or exists OBR-18)'


def test_compile_filters_reports_which_expression() -> None:
    """An error in a list names the failing expression's position and keeps its column."""
    with pytest.raises(FilterSyntaxError) as info:
        compile_filters(["true", 'MSH-9 = "x"'])
    assert info.value.column == 7
    assert str(info.value).startswith("filter #2: unknown operator")
    assert info.value.expression == 'MSH-9 = "x"'


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('MSH-9.1 == "ORM"', ""),
        ('MSH-9.1 == "ORM" and ORC-1 in ["CA","DC"]', 'ORC-1 in ["CA","DC"] was false'),
        ('ORC-1 == "CA" or exists OBR-18', 'ORC-1 == "CA" or exists OBR-18 was false'),
        ('true and (false or PID-5.1 == "SMITH") and true', 'false or PID-5.1 == "SMITH" was false'),
        ("not exists PID-5.1", "not exists PID-5.1 was false"),
        ('true and ((PID-5.1 == "SMITH"))', 'PID-5.1 == "SMITH" was false'),
    ],
)
def test_describe_failure(expr: str, expected: str, msg: HL7Message) -> None:
    """The first failing sub-expression is named by its source text."""
    assert describe_failure(compile_filter(expr), msg) == expected


def test_describe_failure_never_shows_values(msg: HL7Message) -> None:
    """Descriptions contain only expression text, never field values (PHI)."""
    text = describe_failure(compile_filter('PID-5.1 == "SMITH"'), msg)
    assert "DOE" not in text


def test_describe_failure_on_list(msg: HL7Message) -> None:
    """With a list, the failing list item is reported."""
    flt = compile_filters(['MSH-9.1 == "ORM"', "exists OBR-18", "false"])
    assert flt is not None
    assert describe_failure(flt, msg) == "exists OBR-18 was false"
