"""The dashboard renderer's PromQL subset, on hand-made scrapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bench.promql import Labels, PromQLError, Scrape, bucket_quantile, legend, parse


def series(name: str, **labels: str) -> Labels:
    return frozenset({"__name__": name, **labels}.items())


def scrapes() -> list[Scrape]:
    out: list[Scrape] = []
    for i in range(11):  # one scrape a second; counters grow 10/s on a, 5/s on b
        t = float(i)
        out.append(
            (
                t,
                {
                    series("reqs_total", instance="a", code="OK"): 10.0 * i,
                    series("reqs_total", instance="b", code="OK"): 5.0 * i,
                    series("reqs_total", instance="b", code="INVALID_ARGUMENT"): float(i // 5),
                    series("committed", instance="a"): 100.0 + i,
                    series("applied", instance="a"): 98.0 + i,
                    series("lat_bucket", instance="a", le="0.1"): 50.0 * i,
                    series("lat_bucket", instance="a", le="1.0"): 90.0 * i,
                    series("lat_bucket", instance="a", le="+Inf"): 100.0 * i,
                },
            )
        )
    return out


def at(expr: str, t: float = 10.0) -> dict[str, float]:
    vec = parse(expr, {"__rate_interval": "5s", "job": ".*"}).eval(scrapes(), t)
    assert isinstance(vec, dict)
    return {",".join(f"{k}={v}" for k, v in sorted(labels)): v for labels, v in vec.items()}


def test_rate_sum_by_and_matchers() -> None:
    assert at('sum by (instance) (rate(reqs_total{code="OK"}[$__rate_interval]))') == {
        "instance=a": 10.0,
        "instance=b": 5.0,
    }
    assert at('sum(rate(reqs_total{code!="OK", instance=~"b|c"}[11s]))') == {"": 0.2}
    assert at("count(committed) by (instance)") == {"instance=a": 1.0}
    assert at('increase(reqs_total{code="INVALID_ARGUMENT"}[10s])') == {
        "code=INVALID_ARGUMENT,instance=b": 2.0
    }


def test_counter_resets_do_not_make_negative_rates() -> None:
    data: list[Scrape] = [(0.0, {series("c"): 50.0}), (1.0, {series("c"): 60.0})]
    data.append((2.0, {series("c"): 4.0}))  # restarted
    vec = parse("rate(c[5s])").eval(data, 2.0)
    assert vec == {frozenset(): 7.0}  # (10 + 4) over 2 s


def test_vector_arithmetic_and_quantiles() -> None:
    assert at("committed - applied") == {"instance=a": 2.0}
    assert at("committed / 2") == {"instance=a": 55.0}
    q = at("histogram_quantile(0.99, sum by (instance, le) (rate(lat_bucket[5s])))")
    assert q == {"instance=a": 1.0}  # the 99th lands in the +Inf bucket: highest finite bound
    assert bucket_quantile(0.5, [(0.1, 50.0), (1.0, 90.0), (math.inf, 100.0)]) == 0.1
    assert bucket_quantile(0.7, [(0.1, 50.0), (1.0, 90.0), (math.inf, 100.0)]) == pytest.approx(
        0.55
    )
    assert math.isnan(bucket_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_errors_and_legends() -> None:
    with pytest.raises(PromQLError, match="needs a range vector"):
        parse("rate(x)")
    with pytest.raises(PromQLError, match="cannot read"):
        parse("x @ 5")
    assert legend("to {{To}} ({{ instance }})", series("x", To="ab", instance="m1")) == "to ab (m1)"


def test_every_dashboard_query_parses() -> None:
    path = Path(__file__).resolve().parents[2] / "manifests" / "grafana-dashboard.json"
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 16
    for expr in exprs:
        parse(expr, {"__rate_interval": "15s", "__range": "60s", "job": ".*"})
