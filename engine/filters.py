"""Filter expressions for channel YAML, e.g. ``MSH-9.1 == "ORM" and not exists OBR-18``.

Grammar (keywords are case-insensitive)::

    or_expr  := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | atom
    PATH     := an HL7 path (PID-5.1, OBX[2]-5, PID-3[2].1) or a DICOM keyword (Modality), which
                reads the attribute of an event message (engine.event) and "" of an HL7 message
    atom     := "(" or_expr ")" | "exists" PATH | "true" | "false" | PATH "is" ["not"] "empty"
              | PATH ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
              | PATH ["not"] "in" "[" [literal ("," literal)*] "]"
              | PATH ("matches" | "startswith" | "endswith" | "contains") STRING
    literal  := STRING | NUMBER

Compiled once (at config validation) into closures over pre-parsed FieldPaths and
compiled regexes. Missing fields read as ``""``; ``==``/``!=``/``in`` compare strings
exactly; ``<``/``<=``/``>``/``>=`` compare numbers when both sides are decimal numbers,
else strings; ``matches`` is :func:`re.search`; ``MSH-9`` is the whole field.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from typing import NamedTuple, Protocol

from engine.event import KEYWORD_RE, KeywordPath
from engine.hl7.message import FieldPath, PathError, parse_path

__all__ = ["Filter", "FilterSyntaxError", "compile_filter", "compile_filters", "describe_failure"]


class Readable(Protocol):
    """Anything with ``get(path, default)``, such as :class:`HL7Message`."""

    def get(self, path: FieldPath, default: str = "") -> str:
        """Value at *path*, or *default* when absent or empty."""


_Test = Callable[[Readable], bool]

_KEYWORDS = "and or not in exists matches startswith endswith contains true false is empty".split()  # noqa: SIM905
_ORDER_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_COMPARE_OPS = frozenset({"==", "!=", *_ORDER_OPS})
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<string>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    rf"|(?P<keyword>(?i:{'|'.join(_KEYWORDS)})(?![\w.\-]))"
    r"|(?P<word>[A-Za-z_][\w.\-]*(?:\[\w*\][\w.\-]*)*)"
    r"|(?P<op>[=!<>]+)"
    r"|(?P<punct>[()\[\],])",
    re.DOTALL,
)


class FilterSyntaxError(ValueError):
    """A filter expression could not be compiled; ``column`` is 1-based."""

    def __init__(self, reason: str, column: int, expression: str = "") -> None:
        super().__init__(f"{reason} at column {column}")
        self.reason = reason
        self.column = column
        self.expression = expression


class _Token(NamedTuple):
    kind: str  # "word", "keyword", "string", "number", "op", "(", ")", "[", "]", ",", "eof"
    text: str  # the source text (keywords lower-cased)
    value: str  # decoded value for strings and numbers
    start: int  # 0-based offset into the expression
    end: int


def _tokenize(expr: str) -> list[_Token]:
    """Split *expr* into tokens, raising :class:`FilterSyntaxError` on stray characters."""
    tokens: list[_Token] = []
    i = 0
    while i < len(expr):
        m = _TOKEN_RE.match(expr, i)
        if m is None:
            if expr[i] in "\"'":
                raise FilterSyntaxError(f"unterminated string starting with {expr[i]}", i + 1, expr)
            bad = expr[i : i + 2] if expr[i : i + 2] in ("&&", "||") else expr[i]
            hint = " (use 'and' / 'or')" if bad[0] in "&|" else ""
            raise FilterSyntaxError(f"unexpected character {bad!r}{hint}", i + 1, expr)
        kind, text = m.lastgroup or "", m.group()
        value = text
        if kind == "string":
            # Unknown escapes keep their backslash so regexes like "\d+" work.
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e[1], e[0]), text[1:-1], flags=re.DOTALL)
        elif kind == "punct":
            kind = text
        if kind != "ws":
            tokens.append(_Token(kind, text.lower() if kind == "keyword" else text, value, i, m.end()))
        i = m.end()
    tokens.append(_Token("eof", "", "", len(expr), len(expr)))
    return tokens


class _Node:
    """One compiled sub-expression: its source text, test closure and children."""

    __slots__ = ("kind", "source", "test", "children")

    def __init__(self, kind: str, source: str, test: _Test, children: tuple[_Node, ...] = ()) -> None:
        self.kind = kind
        self.source = source
        self.test = test
        self.children = children


def _fold(kind: str, tests: tuple[_Test, ...]) -> _Test:
    """Combine *tests* with short-circuit ``and``/``or`` (nested pairs, no per-call allocation)."""

    def pair(a: _Test, b: _Test) -> _Test:
        return (lambda m: a(m) and b(m)) if kind == "and" else (lambda m: a(m) or b(m))

    return functools.reduce(pair, tests)


def _order_test(fp: FieldPath, op: str, literal: str) -> _Test:
    """``<``/``<=``/``>``/``>=``: numeric when both sides are numbers, else string."""
    cmp = _ORDER_OPS[op]
    if not _NUMBER_RE.fullmatch(literal):
        return lambda m: cmp(m.get(fp, ""), literal)
    number = float(literal)
    is_number = _NUMBER_RE.fullmatch

    def test(m: Readable) -> bool:
        value = m.get(fp, "")
        if is_number(value):
            return cmp(float(value), number)
        return cmp(value, literal)

    return test


class _Parser:
    """Recursive-descent parser building :class:`_Node` trees from tokens."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.pos = 0
        self.paths: set[str] = set()

    def error(self, reason: str, tok: _Token) -> FilterSyntaxError:
        return FilterSyntaxError(reason, tok.start + 1, self.expr)

    def expected(self, what: str, tok: _Token, hint: str = "") -> FilterSyntaxError:
        got = "end of expression" if tok.kind == "eof" else repr(tok.text)
        return self.error(f"expected {what}, got {got}{hint}", tok)

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += tok.kind != "eof"
        return tok

    def at_keyword(self, word: str) -> bool:
        tok = self.tokens[self.pos]
        return tok.kind == "keyword" and tok.text == word

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.take()
        if tok.kind != kind and not (kind in _KEYWORDS and tok.kind == "keyword" and tok.text == kind):
            raise self.expected(what, tok)
        return tok

    def source(self, start: int) -> str:
        return self.expr[start : self.tokens[self.pos - 1].end]

    def parse(self) -> _Node:
        if self.tokens[0].kind == "eof":
            raise FilterSyntaxError("empty filter expression", 1, self.expr)
        node = self.chain("or")
        tok = self.tokens[self.pos]
        if tok.kind != "eof":
            raise self.error(f"unexpected {tok.text!r} after a complete expression", tok)
        return node

    def chain(self, kind: str) -> _Node:
        """or_expr := and_expr ("or" and_expr)*; and_expr := not_expr ("and" not_expr)*"""
        sub = (lambda: self.chain("and")) if kind == "or" else self.not_expr
        start = self.tokens[self.pos].start
        nodes = [sub()]
        while self.at_keyword(kind):
            self.take()
            nodes.append(sub())
        if len(nodes) == 1:
            return nodes[0]
        return _Node(kind, self.source(start), _fold(kind, tuple(n.test for n in nodes)), tuple(nodes))

    def not_expr(self) -> _Node:
        """not_expr := "not" not_expr | atom"""
        if not self.at_keyword("not"):
            return self.atom()
        start = self.take().start
        inner = self.not_expr()
        t = inner.test
        return _Node("not", self.source(start), lambda m: not t(m), (inner,))

    def path(self, tok: _Token) -> FieldPath | KeywordPath:
        """Validate a field path token with :func:`parse_path` (or take it as a DICOM keyword) and record it."""
        try:
            fp = parse_path(tok.text)
        except PathError as exc:
            if KEYWORD_RE.match(tok.text):
                self.paths.add(tok.text)
                return KeywordPath(tok.text)
            raise self.error(f"{exc} or a DICOM keyword such as Modality", tok) from None
        self.paths.add(str(fp))
        return fp

    def atom(self) -> _Node:
        """A parenthesised expression, ``exists PATH``, ``true``/``false`` or ``PATH op operand``."""
        tok = self.take()
        if tok.kind == "(":
            node = self.chain("or")
            self.expect(")", f"')' to close '(' at column {tok.start + 1}")
            return node
        if tok.kind == "keyword" and tok.text in ("true", "false"):
            value = tok.text == "true"
            return _Node("test", tok.text, lambda m: value)
        if tok.kind == "keyword" and tok.text == "exists":
            fp = self.path(self.expect("word", "a field path (e.g. PID-5.1) after 'exists'"))
            return _Node("test", self.source(tok.start), lambda m: m.get(fp, "") != "")
        if tok.kind != "word":
            raise self.expected("a field path, 'not', 'exists', '(', true or false", tok)
        test = self.predicate(self.path(tok), tok.text)
        return _Node("test", self.source(tok.start), test)

    def literal(self, after: str) -> str:
        tok = self.take()
        if tok.kind not in ("string", "number"):
            raise self.expected(f"a string or number after {after}", tok, " (quote strings)" * (tok.kind == "word"))
        return tok.value

    def predicate(self, fp: FieldPath, path_text: str) -> _Test:
        """The operator and operand following a field path, as a test closure."""
        tok = self.take()
        word = tok.text if tok.kind in ("op", "keyword") else ""
        if tok.kind == "op" and word not in _COMPARE_OPS:
            raise self.error(f"unknown operator {word!r} (use ==, !=, <, <=, >, >=)", tok)
        if word in ("==", "!="):
            lit = self.literal(repr(word))
            return (lambda m: m.get(fp, "") == lit) if word == "==" else (lambda m: m.get(fp, "") != lit)
        if word in _ORDER_OPS:
            return _order_test(fp, word, self.literal(repr(word)))
        if word in ("in", "not"):
            if word == "not":
                self.expect("in", "'in' after 'not'")
            choices = self.literal_list()
            return (lambda m: m.get(fp, "") in choices) if word == "in" else (lambda m: m.get(fp, "") not in choices)
        if word == "is":
            negate = self.at_keyword("not")
            self.pos += negate
            self.expect("empty", f"'empty' after 'is{' not' if negate else ''}'")
            return (lambda m: m.get(fp, "") != "") if negate else (lambda m: m.get(fp, "") == "")
        if word in ("matches", "startswith", "endswith", "contains"):
            lit = self.expect("string", f"a quoted string after '{word}'")
            value = lit.value
            if word == "startswith":
                return lambda m: m.get(fp, "").startswith(value)
            if word == "endswith":
                return lambda m: m.get(fp, "").endswith(value)
            if word == "contains":
                return lambda m: value in m.get(fp, "")
            try:
                search = re.compile(value).search
            except re.error as exc:
                raise self.error(f"invalid regular expression {lit.text}: {exc.msg}", lit) from None
            return lambda m: search(m.get(fp, "")) is not None
        ops = "==, !=, <, <=, >, >=, in, not in, matches, startswith, endswith, contains, is empty"
        raise self.expected(f"an operator after {path_text!r} ({ops})", tok)

    def literal_list(self) -> frozenset[str]:
        """``[lit, lit, ...]`` after ``in``."""
        self.expect("[", 'a list like ["A", "B"] after \'in\'')
        values: list[str] = []
        if self.tokens[self.pos].kind != "]":
            values.append(self.literal("'['"))
            while self.tokens[self.pos].kind == ",":
                self.take()
                values.append(self.literal("','"))
        self.expect("]", "',' or ']' in the list")
        return frozenset(values)


class Filter:
    """A compiled filter expression; call it (or ``evaluate``) with a message."""

    __slots__ = ("source", "paths", "_root", "_test")

    def __init__(self, source: str, root: _Node, paths: frozenset[str]) -> None:
        self.source = source
        self.paths = paths
        self._root = root
        self._test = root.test

    def evaluate(self, msg: Readable) -> bool:
        """True when *msg* (anything with ``get(FieldPath, default)``) passes the filter."""
        return self._test(msg)

    __call__ = evaluate

    def __repr__(self) -> str:
        return f"Filter({self.source!r})"


def compile_filter(expr: str) -> Filter:
    """Parse *expr* once into a :class:`Filter`; raises :class:`FilterSyntaxError`."""
    parser = _Parser(expr)
    root = parser.parse()
    return Filter(expr, root, frozenset(parser.paths))


def compile_filters(exprs: str | list[str] | None) -> Filter | None:
    """Compile one expression or a list meaning AND; ``None``/empty list gives ``None``."""
    if exprs is None:
        return None
    if isinstance(exprs, str):
        return compile_filter(exprs)
    filters: list[Filter] = []
    for i, expr in enumerate(exprs, 1):
        try:
            filters.append(compile_filter(expr))
        except FilterSyntaxError as exc:
            err = FilterSyntaxError(f"filter #{i}: {exc.reason}", exc.column, exc.expression)
            err.index = i - 1  # position in the YAML list
            raise err from None
    if not filters:
        return None
    if len(filters) == 1:
        return filters[0]
    source = " and ".join(f"({f.source})" for f in filters)
    roots = tuple(f._root for f in filters)
    root = _Node("and", source, _fold("and", tuple(r.test for r in roots)), roots)
    return Filter(source, root, frozenset().union(*(f.paths for f in filters)))


def describe_failure(flt: Filter, msg: Readable) -> str:
    """Text of the first failing sub-expression (``"X was false"``), or ``""`` if *msg* passes.

    Field values are never included, so the result is safe to store (no PHI).
    """
    node = flt._root
    if node.test(msg):
        return ""
    while node.kind == "and":
        node = next(c for c in node.children if not c.test(msg))
    return f"{node.source} was false"
