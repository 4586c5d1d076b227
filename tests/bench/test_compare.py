"""The comparison harness's parsing and report, without starting any cluster."""

from __future__ import annotations

from pathlib import Path

from bench.compare import Load, markdown, parse_benchmark, workloads

BENCHMARK_OUTPUT = """
Summary:
  Total:\t10.0123 secs.
  Slowest:\t0.0167 secs.
  Requests/sec:\t574.2015

Latency distribution:
  10% in 0.0011 secs.
  50% in 0.0014 secs.
  99% in 0.0085 secs.
  99.9% in 0.0120 secs.
"""


def test_parse_benchmark_reads_rate_and_percentiles() -> None:
    r = parse_benchmark(BENCHMARK_OUTPUT)
    assert r["throughput"] == 574.2015
    assert r["p50_ms"] == 1.4
    assert r["p99_ms"] == 8.5
    assert r["seconds"] == 10.0123


def system(label: str, rate: float, **extra: object) -> dict[str, object]:
    ids = [wid for wid, _, _ in workloads(Load(Path(), Path(), 0))]
    wl = {
        wid: {"throughput": rate, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_ms_per_op": 0.5} for wid in ids
    }
    wl["watch-1000"] = {"error": "loadgen failed"}
    base = {
        "label": label,
        "workloads": wl,
        "fill_keys": 1000,
        "fill_s": 1.0,
        "rss_bytes": {"m1": 2**20},
        "disk_bytes": {"m1": 2**20},
        "failover": {"failover_s": 1.25},
        "learner": {"catchup_s": 2.0},
    }
    base.update(extra)
    return base


def test_markdown_has_ratios_errors_and_failed_measurements() -> None:
    report = {
        "date": "today",
        "machine": "test",
        "seconds": 1.0,
        "quick": True,
        "systems": [
            system("flotilla", 100.0, learner={"error": "not caught up after 120s"}),
            system("etcd-x", 400.0),
        ],
        "notes": ["a note"],
    }
    md = markdown(report)
    assert "| writes, 1 client, to the leader | 100 | 400 |" in md
    assert "| 0.25 |" in md
    assert "error" in md  # the failed watch workload is shown, not dropped
    assert "failed: not caught up after 120s" in md
    assert "1.25 s" in md
    assert "- a note" in md


def test_markdown_leaves_out_what_no_system_ran() -> None:
    """--parts: a workload no system ran has no row; no workloads at all, no table."""
    one = system("flotilla", 100.0)
    del one["workloads"]["put-1"]  # type: ignore[attr-defined]
    md = markdown(
        {"date": "d", "machine": "m", "seconds": 1.0, "quick": False, "systems": [one], "notes": []}
    )
    assert "| writes, 1 client, to the leader |" not in md
    assert "| writes, 100 clients / 10 conns | 100 |" in md

    fill_only = system("flotilla", 100.0, workloads={})
    md = markdown(
        {
            "date": "d",
            "machine": "m",
            "seconds": 1.0,
            "quick": False,
            "systems": [fill_only],
            "notes": [],
        }
    )
    assert "| workload |" not in md
    assert "| resident memory per member after the fill, MiB (max of 3) | 1 |" in md


def test_markdown_has_the_runs_in_turns_and_the_ratio_of_their_medians() -> None:
    turns = {
        "rounds": 3,
        "labels": ["flotilla", "etcd-x"],
        "throughput": {
            "flotilla": {"put-100": [90.0, 120.0, 100.0], "get-lin-100": [300.0, 10.0, 200.0]},
            "etcd-x": {"put-100": [80.0, 200.0, 50.0], "get-lin-100": [100.0, 400.0, 250.0]},
        },
    }
    report = {
        "date": "d",
        "machine": "m",
        "seconds": 1.0,
        "quick": False,
        "systems": [system("flotilla", 100.0), system("etcd-x", 100.0)],
        "turns": turns,
        "notes": [],
    }
    md = markdown(report)
    assert "In turns: 3 fresh clusters of each system" in md
    # Medians 100 / 80 and 200 / 250, whatever the order of the runs or their outliers.
    assert "| put-100 | 90 / 120 / 100 | 80 / 200 / 50 | 1.25 |" in md
    assert "| get-lin-100 | 300 / 10 / 200 | 100 / 400 / 250 | 0.80 |" in md
    assert "In turns" not in markdown({**report, "turns": None})
