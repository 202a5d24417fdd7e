"""A small structural PromQL checker for the monitoring tests: tokens, brackets, functions, names.

It is no PromQL parser (``promtool`` is, where installed): it checks that brackets balance, that
every ``name(`` is a known function or aggregation, that label matchers are ``label op "value"``,
and it returns the metric names and label names an expression uses, so the tests can compare
them with what the engine exports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

GRAFANA_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
FUNCTIONS = {
    "rate", "irate", "increase", "delta", "histogram_quantile", "clamp_min", "clamp_max", "abs", "absent",
    "vector", "scalar", "time", "round", "label_replace",
}  # fmt: skip
AGGREGATIONS = {"sum", "max", "min", "avg", "count", "topk", "bottomk", "quantile", "stddev", "group"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATOR_WORDS = {"and", "or", "unless", "bool", "offset"}
TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<string>"(?:[^"\\]|\\.)*")|(?P<range>\[\s*\d+[smhdwy]\s*\])"""
    r"""|(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)"""
    r"""|(?P<matchop>=~|!~|!=|=)|(?P<op>==|<=|>=|[-+*/%^<>])|(?P<punct>[(){},])"""
)
CLOSE = {"(": ")", "{": "}"}


class PromQLError(ValueError):
    """The expression is not well formed."""


@dataclass
class Used:
    """What one expression uses."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


def expand_grafana(expr: str) -> str:
    """*expr* with Grafana's interval macros and template variables replaced by plain values."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) for every token of *expr*; raises PromQLError on a character that starts none."""
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if m is None:
            raise PromQLError(f"unexpected {expr[pos : pos + 10]!r} at {pos} in {expr!r}")
        if m.lastgroup != "space":
            out.append((m.lastgroup or "", m.group()))
        pos = m.end()
    return out


def check(expr: str) -> Used:
    """Check *expr* (Grafana macros expanded first); the metric and label names it uses."""
    toks = tokens(expand_grafana(expr))
    used, stack = Used(), []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text in ("(", "{"):
            stack.append(text)
            if text == "{":
                i = _matchers(toks, i + 1, used, expr)
                stack.pop()
                continue
        elif text in (")", "}"):
            if not stack or CLOSE[stack.pop()] != text:
                raise PromQLError(f"unbalanced {text!r} in {expr!r}")
        elif kind == "ident":
            if text in GROUPING:
                i = _label_list(toks, i + 1, used, expr)
                continue
            if text in AGGREGATIONS and nxt in ("by", "without"):
                pass  # sum by (label) (...)
            elif nxt == "(":
                if text not in FUNCTIONS | AGGREGATIONS:
                    raise PromQLError(f"unknown function {text!r} in {expr!r}")
            elif text not in OPERATOR_WORDS:
                used.metrics.add(text)
        i += 1
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r} in {expr!r}")
    return used


def _label_list(toks: list[tuple[str, str]], i: int, used: Used, expr: str) -> int:
    """Read ``(label, ...)`` after by/without/on/ignoring (optional after group_left/right)."""
    if i >= len(toks) or toks[i][1] != "(":
        return i
    i += 1
    while i < len(toks) and toks[i][1] != ")":
        kind, text = toks[i]
        if kind == "ident":
            used.labels.add(text)
        elif text != ",":
            raise PromQLError(f"{text!r} in a label list of {expr!r}")
        i += 1
    if i >= len(toks):
        raise PromQLError(f"unclosed label list in {expr!r}")
    return i + 1


def _matchers(toks: list[tuple[str, str]], i: int, used: Used, expr: str) -> int:
    """Read ``label op "value", ... }``; the index after the ``}``."""
    while i < len(toks) and toks[i][1] != "}":
        if i + 2 >= len(toks):
            break
        (k1, label), (k2, _), (k3, _) = toks[i], toks[i + 1], toks[i + 2]
        if k1 != "ident" or k2 != "matchop" or k3 != "string":
            raise PromQLError(f"bad label matcher at {label!r} in {expr!r}")
        used.labels.add(label)
        i += 3
        if i < len(toks) and toks[i][1] == ",":
            i += 1
    if i >= len(toks):
        raise PromQLError(f"unclosed '{{' in {expr!r}")
    return i + 1
