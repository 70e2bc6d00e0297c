"""Label selectors, as k8s.io/apimachinery reads, matches and writes them.

Two forms, one model (a tuple of `Requirement`s, sorted by key):

- the string form (`labelSelector=` queries, Scale `status.selector`), upstream's `labels.Parse`:
  requirements joined by commas, each `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
  `k`, `!k`, `k>1` or `k<1`; whitespace around tokens ignored; keys must be qualified names and
  values label values;
- the object form (`spec.selector` of workloads, volumes, quotas), `metav1.LabelSelector`:
  `matchLabels` plus `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`
  (upstream's `LabelSelectorAsSelector`). A missing selector (None) selects nothing, an empty one
  everything.

`NotIn` and `!=` match objects without the label; `In`, `=` and `Exists` need it, as upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hypernetes.objects.formats import label_value, qualified_name

# operators of the string form (upstream's selection.Operator values)
EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "=", "==", "!="
IN, NOT_IN, EXISTS, DOES_NOT_EXIST = "in", "notin", "exists", "!"
GREATER_THAN, LESS_THAN = "gt", "lt"
_OPERATORS = frozenset(
    (EQUALS, DOUBLE_EQUALS, NOT_EQUALS, IN, NOT_IN, EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN)
)
# metav1.LabelSelectorOperator -> selection.Operator
_EXPRESSION_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


class SelectorError(ValueError):
    """A selector that does not parse or convert (the message is upstream's)."""


# -- the model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...] = ()

    @classmethod
    def new(cls, key: str, op: str, values: Iterable[str] = ()) -> Requirement:
        """Upstream's NewRequirement: SelectorError if the key, values or their count are invalid."""
        vals = tuple(values)
        errs = [f'key: Invalid value: "{key}": {e}' for e in qualified_name(key)]
        if op in (IN, NOT_IN) and not vals:
            errs.append("values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty")
        elif op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS) and len(vals) != 1:
            errs.append("values: Invalid value: exact-match compatibility requires one single value")
        elif op in (EXISTS, DOES_NOT_EXIST) and vals:
            errs.append("values: Invalid value: values set must be empty for exists and does not exist")
        elif op in (GREATER_THAN, LESS_THAN) and (len(vals) != 1 or _int64(vals[0]) is None):
            errs.append(
                "values: Invalid value: for 'Gt', 'Lt' operators, exactly one integer value is required"
            )
        elif op not in _OPERATORS:
            errs.append(f'operator: Unsupported value: "{op}"')
        errs += [f'values[{key}]: Invalid value: "{v}": {e}' for v in vals for e in label_value(v)]
        if errs:
            raise SelectorError(", ".join(errs) if len(errs) == 1 else "[" + ", ".join(errs) + "]")
        return cls(key, op, vals)

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op in (IN, EQUALS, DOUBLE_EQUALS):
            return present and labels[self.key] in self.values
        if self.op in (NOT_IN, NOT_EQUALS):
            return not present or labels[self.key] not in self.values
        if self.op == EXISTS:
            return present
        if self.op == DOES_NOT_EXIST:
            return not present
        have, want = _int64(labels.get(self.key)), _int64(self.values[0]) if self.values else None
        if have is None or want is None:
            return False
        return have > want if self.op == GREATER_THAN else have < want

    def __str__(self) -> str:
        if self.op == EXISTS:
            return self.key
        if self.op == DOES_NOT_EXIST:
            return f"!{self.key}"
        values = ",".join(sorted(self.values))  # upstream sorts values on output only
        if self.op in (IN, NOT_IN):
            return f"{self.key} {self.op} ({values})"
        return self.key + {GREATER_THAN: ">", LESS_THAN: "<"}.get(self.op, self.op) + values


def _int64(value: object) -> int | None:
    """strconv.ParseInt(value, 10, 64), or None."""
    if not isinstance(value, str) or not re.fullmatch(r"[+-]?[0-9]{1,19}", value):
        return None
    n = int(value)
    return n if -(2**63) <= n < 2**63 else None


@dataclass(frozen=True)
class Selector:
    """Requirements that must all match (sorted by key, as upstream). `nothing` is the selector of
    a missing metav1.LabelSelector: it matches no object."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """Selects everything."""
        return not self.requirements and not self.nothing

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _selector(reqs: Iterable[Requirement]) -> Selector:
    return Selector(tuple(sorted(reqs, key=lambda r: r.key)))


# -- the string form ---------------------------------------------------------------------------

_SPECIAL = "=!(),><"
_WHITESPACE = " \t\r\n"
_OPERATOR_TOKENS = {
    "=": EQUALS,
    "==": DOUBLE_EQUALS,
    "!=": NOT_EQUALS,
    "in": IN,
    "notin": NOT_IN,
    ">": GREATER_THAN,
    "<": LESS_THAN,
}
_SYMBOLS = frozenset(("=", "==", "!=", "!", "(", ")", ",", ">", "<"))
_END = ""


def _lex(text: str) -> list[tuple[str, str]]:
    """(kind, literal) tokens: kind is "id", "end", or the symbol itself ("in"/"notin" are both
    keywords and identifiers, as upstream decides by context)."""
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= end:
            tokens.append(("end", _END))
            return tokens
        if text[pos] in _SPECIAL:
            # the longest run of symbols that is a token (upstream's scanSpecialSymbol)
            best, start = "", pos
            while pos < end and text[pos] in _SPECIAL:
                if text[start : pos + 1] in _SYMBOLS:
                    best = text[start : pos + 1]
                elif best:
                    break
                pos += 1
            if not best:
                raise SelectorError(f"error expected: keyword found '{text[start:pos]}'")
            pos = start + len(best)
            tokens.append((best, best))
            continue
        start = pos
        while pos < end and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
            pos += 1
        word = text[start:pos]
        tokens.append((word if word in ("in", "notin") else "id", word))


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self, values: bool = True) -> tuple[str, str]:
        kind, lit = self.tokens[self.pos]
        return ("id" if values and kind in ("in", "notin") else kind), lit

    def take(self, values: bool = True) -> tuple[str, str]:
        tok = self.peek(values)
        self.pos += 1
        return tok

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            kind, lit = self.peek()
            if kind == "end":
                return reqs
            if kind not in ("id", "!"):
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                reqs.append(self.requirement())
            except SelectorError as e:
                raise SelectorError(f"unable to parse requirement: {e}") from None
            kind, lit = self.take()
            if kind == "end":
                return reqs
            if kind != ",":
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            kind, lit = self.peek()
            if kind not in ("id", "!"):
                raise SelectorError(f"found '{lit}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        kind, key = self.take()
        negated = kind == "!"
        if negated:
            kind, key = self.take()
        if kind != "id":
            raise SelectorError(f"found '{key}', expected: identifier")
        if errs := qualified_name(key):
            raise SelectorError(f'Invalid value: "{key}": {"; ".join(errs)}')
        if negated or self.peek()[0] in ("end", ","):
            return Requirement.new(key, DOES_NOT_EXIST if negated else EXISTS)
        kind, lit = self.take(values=False)
        op = _OPERATOR_TOKENS.get(kind) if kind != "id" else None
        if op is None:
            raise SelectorError(f"found '{lit}', expected: in, notin, =, ==, !=, gt, lt")
        values = self.set_values() if op in (IN, NOT_IN) else self.exact_value()
        return Requirement.new(key, op, sorted(set(values)))

    def set_values(self) -> list[str]:
        kind, lit = self.take()
        if kind != "(":
            raise SelectorError(f"found '{lit}' expected: '('")
        kind, lit = self.peek()
        if kind == ")":  # "()" is the empty value
            self.take()
            return [""]
        if kind not in ("id", ","):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values: list[str] = []
        while True:  # "(,", ",," and ",)" add the empty value, as upstream
            kind, lit = self.take()
            if kind == "id":
                values.append(lit)
                nxt, nlit = self.peek()
                if nxt == ")":
                    break
                if nxt != ",":
                    raise SelectorError(f"found '{nlit}', expected: ',' or ')'")
            elif kind == ",":
                if not values:
                    values.append("")
                nxt, _ = self.peek()
                if nxt == ")":
                    values.append("")
                    break
                if nxt == ",":
                    values.append("")
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")
        self.take()  # ")"
        return values

    def exact_value(self) -> list[str]:
        kind, lit = self.peek()
        if kind in ("end", ","):
            return [""]  # "k=" selects the empty value
        kind, lit = self.take()
        if kind != "id":
            raise SelectorError(f"found '{lit}', expected: identifier")
        return [lit]


def parse_selector(text: str | None) -> Selector:
    """The string form (upstream's labels.Parse); "" or None selects everything. SelectorError
    if it does not parse."""
    if not text:
        return Selector()
    return _selector(_Parser(text).parse())


# -- the object form (metav1.LabelSelector) ----------------------------------------------------


def from_label_selector(sel: Mapping[str, Any] | None) -> Selector:
    """upstream's LabelSelectorAsSelector: None selects nothing, {} everything. SelectorError for
    an unknown operator or an invalid key or value."""
    if sel is None:
        return Selector(nothing=True)
    match_labels = sel.get("matchLabels") or {}
    expressions = sel.get("matchExpressions") or []
    reqs = [Requirement.new(str(k), EQUALS, [str(v)]) for k, v in match_labels.items()]
    for expr in expressions:
        expr = expr if isinstance(expr, Mapping) else {}
        op = _EXPRESSION_OPS.get(str(expr.get("operator")))
        if op is None:
            raise SelectorError(f'"{expr.get("operator")}" is not a valid label selector operator')
        reqs.append(Requirement.new(str(expr.get("key", "")), op, [str(v) for v in expr.get("values") or []]))
    return _selector(reqs)


def selector_matches(sel: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a metav1.LabelSelector selects `labels`: None and invalid selectors select
    nothing (as upstream's controllers treat a selector that does not convert)."""
    try:
        return from_label_selector(sel).matches(labels)
    except SelectorError:
        return False


def selector_string(sel: Mapping[str, Any] | None) -> str:
    """A metav1.LabelSelector in the string form, as a Scale's `status.selector`
    (LabelSelectorAsSelector(sel).String()). SelectorError if it does not convert."""
    return str(from_label_selector(sel))


def format_label_selector(sel: Any) -> str:
    """upstream's metav1.FormatLabelSelector (kubectl's SELECTOR column): `<none>` when it
    selects nothing or everything, `<error>` when it does not convert."""
    if sel is not None and not isinstance(sel, Mapping):
        return "<error>"
    try:
        return str(from_label_selector(sel)) or "<none>"
    except SelectorError:
        return "<error>"


# -- node selector terms (node affinity, PV node affinity) --------------------------------------


def _node_requirement(expr: Mapping[str, Any], values: Mapping[str, str]) -> bool:
    """A NodeSelectorRequirement (In, NotIn, Exists, DoesNotExist, Gt, Lt) against `values`."""
    key, op, vals = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
    present = key in values
    if op == "In":
        return present and values[key] in vals
    if op == "NotIn":
        return not present or values[key] not in vals
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and vals:
        try:
            have, limit = int(values[key]), int(vals[0])
        except ValueError:
            return False
        return have > limit if op == "Gt" else have < limit
    return False


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether a NodeSelectorTerm selects `node`: every matchExpressions requirement on its
    labels and every matchFields one on its fields (`metadata.name`), as upstream's
    nodeaffinity.NodeSelector (the scheduler's filter and the DaemonSet controller's)."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    fields = {"metadata.name": meta.get("name") or ""}
    return all(_node_requirement(e, labels) for e in term.get("matchExpressions") or []) and all(
        _node_requirement(e, fields) for e in term.get("matchFields") or []
    )
