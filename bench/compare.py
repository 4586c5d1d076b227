"""Flotilla side by side with etcd on this machine: one command, one table.

Starts a 3-member Flotilla cluster, then a 3-member cluster of each etcd reference (built
from the Go module proxy, and Debian's /usr/bin/etcd if present), one after the other, with
the same flags and data on the same disk, and drives each with the same load: etcd's own
``benchmark`` tool, plus ``bench/loadgen`` (Go) for what the tool has no command for. No load
comes from Python.

    python -m bench.compare [--quick] [--seconds 10] [--systems flotilla,etcd-3.6.16,etcd-3.4.23]

Writes ``bench/results/latest.json`` and ``bench/results/latest.md``. Go binaries are built
once into ``~/.cache/flotilla/bench/`` (``FLOTILLA_BENCH_CACHE`` overrides).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.clusters import (
    ELECTION_MS,
    HEARTBEAT_MS,
    SNAPSHOT_COUNT,
    Cluster,
    EtcdCluster,
    FlotillaCluster,
    dir_size,
)

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("FLOTILLA_BENCH_CACHE", Path.home() / ".cache/flotilla/bench"))
GO = shutil.which("go") or "/usr/local/go/bin/go"
DEBIAN_ETCD = Path("/usr/bin/etcd")
ETCDCTL = os.environ.get("ETCDCTL", "etcdctl")

KEY_SIZE = 8
VAL_SIZE = 256
KEY_SPACE = 100_000

Result = dict[str, Any]


# --- building the Go side ---------------------------------------------------------------


def go_mod_version(module: str, gomod: Path) -> str:
    for line in gomod.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in (module, "require") and module in parts:
            return parts[parts.index(module) + 1]
    raise RuntimeError(f"{module} not pinned in {gomod}")


def go_build(module_dir: Path, package: str, out: Path) -> Path:
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {out.name} (once) ...", file=sys.stderr, flush=True)
    subprocess.run([GO, "build", "-o", str(out), package], cwd=module_dir, check=True)
    return out


def build_tools() -> tuple[Path, Path, Path, str]:
    gomod = HERE / "etcd/go.mod"
    server = go_mod_version("go.etcd.io/etcd/server/v3", gomod)
    tool = go_mod_version("go.etcd.io/etcd/v3", gomod)
    etcd = go_build(HERE / "etcd", ".", CACHE / f"etcd-{server}")
    benchmark = go_build(
        HERE / "etcd", "go.etcd.io/etcd/v3/tools/benchmark", CACHE / f"benchmark-{tool}"
    )
    digest = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        digest.update((HERE / "loadgen" / name).read_bytes())
    loadgen = go_build(HERE / "loadgen", ".", CACHE / f"loadgen-{digest.hexdigest()[:12]}")
    return etcd, benchmark, loadgen, server.lstrip("v")


def version_of(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"etcd Version:\s*(\S+)", out)
    return m.group(1) if m else "unknown"


# --- running load -----------------------------------------------------------------------

_SUMMARY = re.compile(r"Requests/sec:\s*([\d.]+)")
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)% in ([\d.]+) secs", re.M)
_TOTAL = re.compile(r"Total:\s*([\d.]+) secs")


def parse_benchmark(text: str) -> Result:
    rate = _SUMMARY.search(text)
    if not rate:
        raise RuntimeError("benchmark printed no summary:\n" + text[-2000:])
    pct = {p: float(s) * 1000 for p, s in _PCT.findall(text)}
    total = _TOTAL.search(text)
    return {
        "throughput": float(rate.group(1)),
        "p50_ms": pct.get("50"),
        "p99_ms": pct.get("99"),
        "seconds": float(total.group(1)) if total else None,
    }


class Load:
    def __init__(self, benchmark: Path, loadgen: Path, seconds: float) -> None:
        self.benchmark = benchmark
        self.loadgen = loadgen
        self.seconds = seconds

    def run_benchmark(self, cluster: Cluster, clients: int, conns: int, args: list[str]) -> Result:
        """One run of etcd's benchmark tool, sized to last about ``seconds``.

        The tool counts requests rather than time, so a short probe measures the rate first
        and the real run asks for rate x seconds requests.
        """
        probe = max(clients * 3, 200)
        first = self.run_count(cluster, clients, conns, args, probe, timeout=120)
        total = int(first["throughput"] * self.seconds)
        if total <= probe * 2:
            return first
        result = self.run_count(cluster, clients, conns, args, total, timeout=self.seconds * 6)
        result["probe_requests"] = probe
        return result

    def run_count(
        self,
        cluster: Cluster,
        clients: int,
        conns: int,
        args: list[str],
        total: int,
        timeout: float,
    ) -> Result:
        cmd = [
            str(self.benchmark),
            f"--endpoints={cluster.endpoints}",
            f"--clients={clients}",
            f"--conns={conns}",
            *args,
            f"--total={total}",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        result = parse_benchmark(out.stdout)
        result["requests"] = total
        return result

    def run_loadgen(
        self, cluster: Cluster, args: list[str], seconds: float | None = None
    ) -> Result:
        secs = self.seconds if seconds is None else seconds
        cmd = [
            str(self.loadgen),
            f"--endpoints={cluster.endpoints}",
            f"--duration={secs}s",
            f"--val-size={VAL_SIZE}",
            f"--key-space={KEY_SPACE}",
            *args,
        ]
        timeout = secs * 6 + 60 if "--workload=fill" not in args else 3600
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


PUT = ["put", f"--key-size={KEY_SIZE}", f"--val-size={VAL_SIZE}", f"--key-space-size={KEY_SPACE}"]
PUT_TO_LEADER = [*PUT, "--target-leader"]
"""The single client writes to the leader, as in etcd's performance guide. The tool gives
each connection one endpoint of the list in turn, so one connection always went to the
first: the row measured the leader or a follower depending on how the election fell."""
READ_KEY = "00000000"


def workloads(load: Load) -> list[tuple[str, str, Callable[[Cluster], Result]]]:
    """(id, description, run) for each throughput workload, in the order they run."""

    def rng(consistency: str) -> list[str]:
        return ["range", READ_KEY, f"--consistency={consistency}"]

    return [
        (
            "put-1",
            "writes, 1 client, to the leader",
            lambda c: load.run_benchmark(c, 1, 1, PUT_TO_LEADER),
        ),
        (
            "put-100",
            "writes, 100 clients / 10 conns",
            lambda c: load.run_benchmark(c, 100, 10, PUT),
        ),
        (
            "get-lin-1",
            "linearizable reads, 1 client",
            lambda c: load.run_benchmark(c, 1, 1, rng("l")),
        ),
        (
            "get-lin-100",
            "linearizable reads, 100 clients",
            lambda c: load.run_benchmark(c, 100, 10, rng("l")),
        ),
        (
            "get-ser-1",
            "serializable reads, 1 client",
            lambda c: load.run_benchmark(c, 1, 1, rng("s")),
        ),
        (
            "get-ser-100",
            "serializable reads, 100 clients",
            lambda c: load.run_benchmark(c, 100, 10, rng("s")),
        ),
        (
            "txn-cas-100",
            "txn: get mod_revision, then If(mod_revision)=Then(put), 100 clients",
            lambda c: load.run_loadgen(c, ["--workload=txn", "--clients=100", "--conns=10"]),
        ),
        (
            "watch-1000",
            "watch fan-out: 1,000 watchers on one prefix, events delivered/s",
            lambda c: load.run_loadgen(c, ["--workload=watch", "--watchers=1000", "--streams=10"]),
        ),
        (
            "lease-keepalive-100",
            "lease keep-alives, 100 clients",
            lambda c: load.run_benchmark(c, 100, 10, ["lease-keepalive"]),
        ),
    ]


# --- the non-throughput measurements ----------------------------------------------------


def fill(load: Load, cluster: Cluster, keys: int) -> float:
    """Write ``keys`` distinct keys, 100 puts per transaction; returns the seconds it took.

    Bulk transactions keep a million-key fill to minutes on every system; each key is
    written once, so the store holds exactly ``keys`` live keys and one revision of each.
    """
    t0 = time.monotonic()
    r = load.run_loadgen(
        cluster,
        [
            "--workload=fill",
            "--clients=16",
            "--conns=4",
            "--batch=100",
            "--request-timeout=60s",
            f"--key-space={keys}",
        ],
    )
    if r["errors"] or r["ops"] != keys:
        raise RuntimeError(f"fill wrote {r['ops']} of {keys} keys")
    return time.monotonic() - t0


def failover(load: Load, cluster: Cluster) -> Result:
    """kill -9 the leader under write load; time until the next successful write."""
    seconds = 8.0
    box: dict[str, Result] = {}

    def writer() -> None:
        box["r"] = load.run_loadgen(
            cluster, ["--workload=writer", "--clients=10", "--request-timeout=300ms"], seconds
        )

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(3.0)
    leader = cluster.wait_leader()
    killed_at = time.time()
    cluster.kill(leader)
    t.join()
    r = box["r"]
    # A write the dead leader committed can still reach its client just after the kill (a
    # follower relays the answer), so the longest gap may start a little after the kill.
    around_kill = killed_at - 2.0 <= r["gap_start"] <= killed_at + 0.5 < r["gap_end"]
    return {
        "killed": leader.name,
        "killed_at": killed_at,
        "gap_start": r["gap_start"],
        "gap_end": r["gap_end"],
        "failover_s": r["gap_end"] - killed_at if around_kill else None,
        "max_write_gap_s": r["max_gap_s"],
        "writes": r["ops"],
        "errors": r["errors"],
    }


def etcdctl(endpoints: str, *args: str, timeout: float = 30) -> str:
    out = subprocess.run(
        [ETCDCTL, f"--endpoints={endpoints}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, ETCDCTL_API="3"),
    )
    if out.returncode != 0:
        raise RuntimeError(f"etcdctl {' '.join(args)}: {out.stderr.strip()[-500:]}")
    return out.stdout


def revision(endpoint: str) -> int:
    status = json.loads(etcdctl(endpoint, "endpoint", "status", "-w", "json", timeout=5))
    return int(status[0]["Status"]["header"]["revision"])


def learner_catchup(load: Load, cluster: Cluster, timeout: float = 120) -> Result:
    """Add a learner (MemberAdd isLearner), start it, time until it has the last revision.

    First 2.5 x snapshot-count single puts (on 1,000 keys), so that every system has taken
    a snapshot and compacted its log since the fill: the learner then receives the whole
    store as a snapshot, which is what this row measures, followed by the log's tail.
    Measured from the start of the new process until its Status shows the leader's revision.
    """
    if not shutil.which(ETCDCTL):
        return {"error": "etcdctl not installed"}
    churn = int(SNAPSHOT_COUNT * 2.5)
    args = ["put", f"--key-size={KEY_SIZE}", f"--val-size={VAL_SIZE}", "--key-space-size=1000"]
    load.run_count(cluster, 100, 10, args, churn, timeout=600)
    leader = cluster.wait_leader()
    target = revision(leader.endpoint)
    m = cluster.new_member("m4")
    # Asked of the leader: a Flotilla follower does not know the leader's client URL yet,
    # so it cannot forward MemberAdd (see NOTES.md).
    etcdctl(leader.endpoint, "member", "add", m.name, "--learner", f"--peer-urls={m.peer_url}")
    cluster.learners.append(m)
    t0 = time.monotonic()
    cluster.spawn(m, [*cluster.members, m], state="existing")
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if not m.alive:
            raise RuntimeError(f"the learner exited; see {cluster.root}/{m.name}.log")
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError):
            if revision(m.endpoint) >= target:
                return {"catchup_s": time.monotonic() - t0, "revision": target}
        time.sleep(0.1)
    return {"error": f"not caught up after {timeout:.0f}s"}


def profile(load: Load, cluster: Cluster, out_dir: Path) -> Result:
    """Sample the leader and one follower with py-spy while the 100-client write load runs.

    Only the thread holding the GIL is sampled (``--gil``), so the profile shows where the
    Python CPU time goes, not threads waiting on fsync or the network.
    A separate run after the measured ones, so the sampler does not disturb the table.
    Writes collapsed stacks (``*.txt``, one line per stack with its sample count) and a
    flame graph (``*.svg``) per member.
    """
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.members if m is not leader and m.alive)
    seconds = max(int(load.seconds), 5)
    procs = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for role, m in (("leader", leader), ("follower", follower)):
        for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
            cmd = [pyspy, "record", "--pid", str(m.pid), "--duration", str(seconds)]
            cmd += ["--rate", "200", "--nonblocking", "--gil", "--format", fmt]
            cmd += ["-o", str(out_dir / f"profile-{role}-put-100.{ext}")]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1.0)
    result = load.run_loadgen(
        cluster, ["--workload=writer", "--clients=100", "--request-timeout=5s"], seconds - 1
    )
    for proc in procs:
        proc.wait(timeout=60)
    for role in ("leader", "follower"):
        svg = out_dir / f"profile-{role}-put-100.svg"
        if svg.exists():  # the title is py-spy's command line, local paths included
            title = f"Flotilla {role} under 100-client writes (py-spy --gil)"
            svg.write_text(
                re.sub(
                    r'(<text id="title"[^>]*>)[^<]*(</text>)',
                    rf"\g<1>{title}\g<2>",
                    svg.read_text(),
                )
            )
    return {"throughput_while_profiled": result["throughput"], "leader": leader.name}


# --- one system -------------------------------------------------------------------------


PARTS = ("workloads", "profile", "fill", "learner", "failover", "turns")

TURN_WORKLOADS = ("put-100", "get-lin-100", "get-ser-1")
"""The workloads whose targets are ratios near parity, measured again in turns (see
:func:`in_turns`). One client's serializable reads are bound by a round trip that takes
0.2 ms on both systems, so one run of each cannot tell them apart."""


def measure(
    label: str,
    cluster: Cluster,
    load: Load,
    fill_keys: int,
    profile_dir: Path | None = None,
    parts: frozenset[str] = frozenset(PARTS),
) -> Result:
    print(f"== {label}: starting 3 members under {cluster.root}", file=sys.stderr, flush=True)
    cluster.start()
    out: Result = {"label": label, "workloads": {}}
    try:
        subprocess.run(
            [
                str(load.benchmark),
                f"--endpoints={cluster.endpoints}",
                "put",
                "--key-size=8",
                f"--val-size={VAL_SIZE}",
                "--total=1",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )  # the key the read workloads read ("00000000" is the tool's key 0)
        for wid, _desc, run in workloads(load) if "workloads" in parts else []:
            print(f"   {label}: {wid}", file=sys.stderr, flush=True)
            try:
                cpu0 = cluster.cpu_seconds()
                r = run(cluster)
                # CPU of the three members per operation, over the whole workload (the
                # rate probe included, so it is charged to the probe's requests too).
                cpu = cluster.cpu_seconds() - cpu0
                ops = r.get("ops") or r["throughput"] * (r.get("seconds") or 0)
                ops += r.get("probe_requests", 0)
                r["members_cpu_s"] = cpu
                r["cpu_ms_per_op"] = 1000 * cpu / ops if ops else None
                out["workloads"][wid] = r
            except Exception as exc:  # one failed workload must not lose the others
                out["workloads"][wid] = {"error": str(exc)[-500:]}
        if profile_dir is not None and "profile" in parts:
            print(f"   {label}: profiling under write load", file=sys.stderr, flush=True)
            out["profile"] = profile(load, cluster, profile_dir)
        if "fill" in parts:
            print(f"   {label}: filling {fill_keys} keys", file=sys.stderr, flush=True)
            out["fill_keys"] = fill_keys
            out["fill_s"] = fill(load, cluster, fill_keys)
            time.sleep(1.0)
            out["rss_bytes"] = {m.name: m.rss_bytes() for m in cluster.members}
            out["disk_bytes"] = {m.name: dir_size(m.data_dir) for m in cluster.members}
            print(f"   {label}: {out['fill_s']:.1f} s, RSS {out['rss_bytes']}", file=sys.stderr)
        if "learner" in parts:
            print(f"   {label}: learner catch-up", file=sys.stderr, flush=True)
            try:
                out["learner"] = learner_catchup(load, cluster)
            except Exception as exc:
                out["learner"] = {"error": str(exc)[-500:]}
            print(f"   {label}: {out['learner']}", file=sys.stderr, flush=True)
        if "failover" in parts:
            print(f"   {label}: failover", file=sys.stderr, flush=True)
            try:
                out["failover"] = failover(load, cluster)
            except Exception as exc:
                out["failover"] = {"error": str(exc)[-500:]}
    finally:
        cluster.stop()
    return out


def in_turns(
    load: Load, makers: dict[str, Callable[[], Cluster]], labels: list[str], rounds: int
) -> Result:
    """Each system ``rounds`` times on a fresh cluster, the systems alternating, running
    :data:`TURN_WORKLOADS`: one run of each workload per system is at the mercy of what else
    the machine did meanwhile, and where two systems are this close that decides a ratio."""
    runs: dict[str, dict[str, list[float]]] = {
        lab: {wid: [] for wid in TURN_WORKLOADS} for lab in labels
    }
    table = {wid: run for wid, _desc, run in workloads(load)}
    for n in range(rounds):
        for lab in labels:
            print(f"   in turns {n + 1}/{rounds}: {lab}", file=sys.stderr, flush=True)
            cluster = makers[lab]()
            cluster.start()
            try:
                for wid in TURN_WORKLOADS:
                    runs[lab][wid].append(table[wid](cluster)["throughput"])
            finally:
                cluster.stop()
    return {"rounds": rounds, "labels": labels, "throughput": runs}


# --- report -----------------------------------------------------------------------------


def fmt_rate(r: Result | None) -> str:
    if not r or "error" in r:
        return "error"
    return f"{r['throughput']:,.0f}"


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def fmt_mib(v: float) -> str:
    return f"{v / 2**20:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}"


def markdown(report: Result) -> str:
    systems = report["systems"]
    labels = [s["label"] for s in systems]
    base = systems[0]
    refs = systems[1:]
    lines = [
        "# Flotilla vs etcd — latest run",
        "",
        f"{report['date']} · {report['machine']} · {report['seconds']:g} s per workload"
        f"{' (--quick)' if report['quick'] else ''} · heartbeat {HEARTBEAT_MS} ms, election"
        f" {ELECTION_MS} ms, snapshot-count {SNAPSHOT_COUNT}, fsync on, 3 members on loopback,"
        f" one system at a time. Keys {KEY_SIZE} B over {KEY_SPACE:,} keys, values {VAL_SIZE} B."
        " Load: etcd's `benchmark` tool (put, range, lease-keepalive) and `bench/loadgen`"
        " (txn, watch, failover).",
        "",
        "Throughput in operations/s (watch: events delivered/s over all watchers); latency p50 /"
        " p99 in ms; CPU ms/op = user+system CPU of all three members divided by operations;"
        " ratio = Flotilla throughput ÷ etcd throughput (above 1: Flotilla faster).",
        "",
    ]
    descs = {wid: desc for wid, desc, _ in workloads(Load(Path(), Path(), 0))}
    ran = [wid for wid in descs if any(s["workloads"].get(wid) for s in systems)]
    if ran:  # none with --parts without workloads
        head = ["workload", *[f"{lab} ops/s" for lab in labels]]
        head += [f"{lab} p50/p99" for lab in labels]
        head += [f"{lab} CPU ms/op" for lab in labels]
        head += [f"÷ {r['label']}" for r in refs]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + " --- |" * len(head))
        for wid in ran:
            desc = descs[wid]
            rows = [s["workloads"].get(wid) for s in systems]
            cells = [f"{desc}", *[fmt_rate(r) for r in rows]]
            for r in rows:
                ok = r and "error" not in r
                cells.append(f"{fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])}" if ok else "-")
            for r in rows:
                ok = r and "error" not in r and r.get("cpu_ms_per_op") is not None
                cells.append(f"{r['cpu_ms_per_op']:.3f}" if ok else "-")
            b = base["workloads"].get(wid) or {}
            for ref in refs:
                rr = ref["workloads"].get(wid) or {}
                cells.append(ratio(b.get("throughput"), rr.get("throughput")))
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| measurement | " + " | ".join(labels) + " |",
        "|" + " --- |" * (len(labels) + 1),
    ]

    def row(name: str, get: Callable[[Result], str]) -> None:
        cells = []
        for s in systems:
            try:
                cells.append(get(s))
            except (KeyError, TypeError):
                cells.append("-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def fo(s: Result) -> str:
        f = s["failover"]
        if f.get("failover_s") is None:
            return f"not seen (longest write gap {f.get('max_write_gap_s', 0):.2f} s)"
        return f"{f['failover_s']:.2f} s"

    row("leader failover: kill -9 leader under load → first successful write", fo)
    row(
        f"fill {base.get('fill_keys', 0):,} distinct keys (100-put txns, 16 clients), seconds",
        lambda s: f"{s['fill_s']:.1f}",
    )
    row(
        "resident memory per member after the fill, MiB (max of 3)",
        lambda s: fmt_mib(max(s["rss_bytes"].values())),
    )
    row(
        "on-disk size per member after the fill, MiB (max of 3)",
        lambda s: fmt_mib(max(s["disk_bytes"].values())),
    )

    def learner(s: Result) -> str:
        ln = s["learner"]
        if "catchup_s" in ln:
            return f"{ln['catchup_s']:.1f} s"
        return f"failed: {ln['error'][:60]}" if "error" in ln else "not measured"

    row(f"new learner catches up on the {base.get('fill_keys', 0):,}-key store", learner)
    turns = report.get("turns")
    if turns:
        lines += ["", *turns_table(turns)]
    lines += ["", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)


def turns_table(turns: Result) -> list[str]:
    labels = turns["labels"]
    base, refs = labels[0], labels[1:]
    runs = turns["throughput"]
    n = turns["rounds"]
    lines = [
        f"In turns: {n} fresh cluster{'s' if n != 1 else ''} of each system, alternating"
        f" ({' then '.join(labels)}{', and again' if n > 1 else ''}); the ratio is of the"
        " medians.",
        "",
        "| workload | "
        + " | ".join(f"{lab} ops/s, each run" for lab in labels)
        + " | "
        + " | ".join(f"÷ {r} (medians)" for r in refs)
        + " |",
        "|" + " --- |" * (len(labels) + len(refs) + 1),
    ]
    for wid in runs[base]:  # the workloads this run measured in turns, in its order
        cells = [wid]
        for lab in labels:
            cells.append(" / ".join(f"{v:,.0f}" for v in runs[lab][wid]))
        for ref in refs:
            mb, mr = runs[base][wid], runs[ref][wid]
            cells.append(ratio(statistics.median(mb), statistics.median(mr)) if mb and mr else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="3 s per workload, 20,000-key fill, one turn"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="length of each workload")
    p.add_argument("--fill-keys", type=int, default=100_000, help="keys written before memory")
    p.add_argument("--systems", default="", help="comma-separated labels to run (default all)")
    p.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default all: {','.join(PARTS)})",
    )
    p.add_argument("--data-root", type=Path, default=CACHE / "data", help="member data dirs")
    p.add_argument(
        "--profile", action="store_true", help="py-spy profiles of Flotilla under write load"
    )
    p.add_argument(
        "--turns", type=int, default=3, help="fresh clusters of each system for the turns part"
    )
    p.add_argument("--out", type=Path, default=HERE / "results", help="where results go")
    p.add_argument(
        "--render", type=Path, metavar="JSON", help="only print the table of an earlier run"
    )
    args = p.parse_args(argv)
    if args.render:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    if args.quick:
        args.seconds = min(args.seconds, 3.0)
        args.fill_keys = min(args.fill_keys, 20_000)
        args.turns = min(args.turns, 1)

    etcd_bin, benchmark, loadgen, etcd_version = build_tools()
    load = Load(benchmark, loadgen, args.seconds)
    makers: dict[str, Callable[[], Cluster]] = {
        "flotilla": lambda: FlotillaCluster("flotilla", args.data_root / "flotilla"),
        f"etcd-{etcd_version}": lambda: EtcdCluster(
            "etcd", args.data_root / f"etcd-{etcd_version}", binary=etcd_bin
        ),
    }
    if DEBIAN_ETCD.exists():
        deb = version_of(DEBIAN_ETCD)
        makers[f"etcd-{deb}"] = lambda: EtcdCluster(
            "etcd", args.data_root / f"etcd-{deb}", binary=DEBIAN_ETCD
        )
    wanted = [s for s in args.systems.split(",") if s] or list(makers)
    parts = frozenset(x for x in args.parts.split(",") if x)
    if parts - set(PARTS) or ("learner" in parts and "fill" not in parts):
        p.error(f"--parts: choose from {','.join(PARTS)}; learner needs fill")
    systems = [
        measure(
            label,
            makers[label](),
            load,
            args.fill_keys,
            args.out if args.profile and label == "flotilla" else None,
            parts,
        )
        for label in wanted
    ]
    # Flotilla against the newest etcd only: the reference the targets name.
    pair = [lab for lab in list(makers)[:2] if lab in wanted]
    turns = None
    if "turns" in parts and len(pair) == 2 and args.turns > 0:
        turns = in_turns(load, makers, pair, args.turns)

    report: Result = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "seconds": args.seconds,
        "quick": args.quick,
        "flags": {
            "heartbeat_ms": HEARTBEAT_MS,
            "election_ms": ELECTION_MS,
            "snapshot_count": SNAPSHOT_COUNT,
        },
        "systems": systems,
        "turns": turns,
        "notes": [
            "All members, the load generator and the harness share this machine's cores, so"
            " absolute numbers are low and noisy; compare ratios within one run.",
            f"Memory and disk are measured after filling {args.fill_keys:,} keys through"
            " transactions of 100 puts each (`loadgen --workload=fill`).",
            "Learner catch-up: MemberAdd (isLearner) through etcdctl, then a fourth member"
            " started with --initial-cluster-state existing; timed from its start until its"
            " Status reports the leader's revision. Before it, 2.5 x snapshot-count single puts"
            " make every system snapshot and compact its log, so the learner gets a snapshot.",
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (args.out / "latest.md").write_text(md)
    print(md)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so the clusters are stopped on the way out


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
