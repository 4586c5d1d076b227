"""Just enough PromQL to draw the Grafana dashboard from scraped samples, without Prometheus.

Supported (what ``manifests/grafana-dashboard.json`` uses): selectors with ``= != =~ !~``
matchers and ``[range]``; ``rate`` and ``increase``; ``sum min max count`` with ``by (...)``
before or after the argument; ``histogram_quantile``; ``+ - * /`` between vectors with the
same labels or with a number. Grafana's ``$variables`` are replaced before parsing.
``rate`` divides the increase between the first and last sample of the window by the time
between them (Prometheus also extrapolates to the window's edges; the shapes are the same).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Labels = frozenset[tuple[str, str]]
Scrape = tuple[float, dict[Labels, float]]
"""One scrape of every target: (time, {series labels including __name__: value})."""
Vector = dict[Labels, float]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?(?![smhd\w]))|(?P<dur>\d+[smhd])|(?P<str>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<id>[A-Za-z_:][\w:]*)|(?P<op>=~|!~|!=|[(){}\[\],=+\-*/]))"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
AGGREGATIONS = ("sum", "min", "max", "count")


class PromQLError(ValueError):
    pass


def tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise PromQLError(f"cannot read {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class Node:
    """A parsed expression: ``eval(scrapes, t)`` gives its instant vector (or a number)."""

    eval: Callable[[Sequence[Scrape], float], Vector | float]


def _drop_name(labels: Labels) -> Labels:
    return frozenset((k, v) for k, v in labels if k != "__name__")


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise PromQLError(f"expected {value!r}, found {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        if self.peek()[0] != "eof":
            raise PromQLError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self) -> Node:
        left = self.term()
        while self.peek()[1] in ("+", "-"):
            left = _binary(self.take()[1], left, self.term())
        return left

    def term(self) -> Node:
        left = self.atom()
        while self.peek()[1] in ("*", "/"):
            left = _binary(self.take()[1], left, self.atom())
        return left

    def atom(self) -> Node:
        kind, value = self.peek()
        if kind == "num":
            self.take()
            number = float(value)
            return Node(lambda s, t: number)
        if value == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if kind != "id":
            raise PromQLError(f"unexpected {value!r}")
        if value in AGGREGATIONS:
            return self.aggregation()
        if value in ("rate", "increase"):
            self.take()
            self.take("(")
            name, matchers, window = self.selector()
            if window is None:
                raise PromQLError(f"{value}() needs a range vector")
            self.take(")")
            return _rate(name, matchers, window, per_second=value == "rate")
        if value == "histogram_quantile":
            self.take()
            self.take("(")
            q = float(self.take()[1])
            self.take(",")
            inner = self.expr()
            self.take(")")
            return _quantile(q, inner)
        name, matchers, window = self.selector()
        if window is not None:
            raise PromQLError("a range vector needs rate() or increase()")
        return _instant(name, matchers)

    def labels_list(self) -> list[str]:
        self.take("(")
        out = []
        while self.peek()[1] != ")":
            out.append(self.take()[1])
            if self.peek()[1] == ",":
                self.take()
        self.take(")")
        return out

    def aggregation(self) -> Node:
        op = self.take()[1]
        by: list[str] | None = None
        if self.peek()[1] == "by":
            self.take()
            by = self.labels_list()
        self.take("(")
        inner = self.expr()
        self.take(")")
        if self.peek()[1] == "by":
            self.take()
            by = self.labels_list()
        return _aggregate(op, by or [], inner)

    def selector(self) -> tuple[str, list[tuple[str, str, str]], float | None]:
        name = self.take()[1]
        matchers = []
        if self.peek()[1] == "{":
            self.take()
            while self.peek()[1] != "}":
                label = self.take()[1]
                op = self.take()[1]
                raw = self.take()[1]
                matchers.append((label, op, raw[1:-1].replace('\\"', '"')))
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
        window = None
        if self.peek()[1] == "[":
            self.take()
            dur = self.take()[1]
            window = float(dur[:-1]) * _UNITS[dur[-1]]
            self.take("]")
        return name, matchers, window


def _matches(labels: Labels, name: str, matchers: list[tuple[str, str, str]]) -> bool:
    d = dict(labels)
    if d.get("__name__") != name:
        return False
    for label, op, want in matchers:
        got = d.get(label, "")
        ok = {
            "=": got == want,
            "!=": got != want,
            "=~": re.fullmatch(want, got) is not None,
            "!~": re.fullmatch(want, got) is None,
        }[op]
        if not ok:
            return False
    return True


LOOKBACK = 300.0


def _instant(name: str, matchers: list[tuple[str, str, str]]) -> Node:
    def ev(scrapes: Sequence[Scrape], t: float) -> Vector:
        out: Vector = {}
        for ts, samples in scrapes:
            if ts > t or ts < t - LOOKBACK:
                continue
            for labels, v in samples.items():
                if _matches(labels, name, matchers):
                    out[labels] = v  # later scrapes overwrite earlier ones
        return out

    return Node(ev)


def _rate(name: str, matchers: list[tuple[str, str, str]], window: float, per_second: bool) -> Node:
    def ev(scrapes: Sequence[Scrape], t: float) -> Vector:
        points: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for ts, samples in scrapes:
            if t - window < ts <= t:
                for labels, v in samples.items():
                    if _matches(labels, name, matchers):
                        points[labels].append((ts, v))
        out: Vector = {}
        for labels, pts in points.items():
            if len(pts) < 2:
                continue
            increase = 0.0
            for (_, a), (_, b) in itertools.pairwise(pts):
                increase += b - a if b >= a else b  # a counter reset starts again from 0
            span = pts[-1][0] - pts[0][0]
            out[_drop_name(labels)] = increase / span if per_second else increase
        return out

    return Node(ev)


def _vector(node: Node, scrapes: Sequence[Scrape], t: float) -> Vector:
    got = node.eval(scrapes, t)
    if not isinstance(got, dict):
        raise PromQLError("expected a vector")
    return got


def _aggregate(op: str, by: list[str], inner: Node) -> Node:
    def ev(scrapes: Sequence[Scrape], t: float) -> Vector:
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, v in _vector(inner, scrapes, t).items():
            key = frozenset((k, val) for k, val in labels if k in by)
            groups[key].append(v)
        fn: Callable[[list[float]], float] = {"sum": sum, "min": min, "max": max, "count": len}[op]  # type: ignore[assignment]
        return {k: float(fn(vs)) for k, vs in groups.items()}

    return Node(ev)


def _binary(op: str, left: Node, right: Node) -> Node:
    apply: Callable[[float, float], float] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b if b else math.nan,
    }[op]

    def ev(scrapes: Sequence[Scrape], t: float) -> Vector | float:
        a, b = left.eval(scrapes, t), right.eval(scrapes, t)
        if isinstance(a, float) and isinstance(b, float):
            return apply(a, b)
        if isinstance(a, float):
            assert isinstance(b, dict)
            return {_drop_name(k): apply(a, v) for k, v in b.items()}
        if isinstance(b, float):
            return {_drop_name(k): apply(v, b) for k, v in a.items()}
        bm = {_drop_name(k): v for k, v in b.items()}
        return {
            _drop_name(k): apply(v, bm[_drop_name(k)]) for k, v in a.items() if _drop_name(k) in bm
        }

    return Node(ev)


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return math.nan
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == math.inf:
                return prev_bound  # the highest finite bound, as Prometheus answers
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return buckets[-2][0]


def _quantile(q: float, inner: Node) -> Node:
    def ev(scrapes: Sequence[Scrape], t: float) -> Vector:
        groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for labels, v in _vector(inner, scrapes, t).items():
            d = dict(labels)
            le = d.pop("le", None)
            if le is None:
                continue
            d.pop("__name__", None)
            groups[frozenset(d.items())].append((float(le), v))
        return {k: bucket_quantile(q, b) for k, b in groups.items()}

    return Node(ev)


def parse(expr: str, variables: dict[str, str] | None = None) -> Node:
    """Parse ``expr`` after replacing Grafana's ``$name`` variables (longest names first)."""
    for name in sorted(variables or {}, key=len, reverse=True):
        expr = expr.replace("$" + name, (variables or {})[name])
    return _Parser(expr).parse()


def legend(fmt: str, labels: Labels) -> str:
    """Grafana's legend format: ``{{label}}`` replaced by the series' label value."""
    d = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt).strip()
