"""The soak: randomized faults on a real cluster for as long as asked, then a summary.

    python -m tests.lin.soak --minutes 60 --seed 7

Runs rounds of two minutes (fresh keys each, so the checker's search stays small) on one
three-member cluster in network namespaces, and prints per round and at the end: operations,
faults injected, anomalies found. Exit status 1 if any anomaly was found. Needs root.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ..node.netns import NetnsCluster, netns_available
from .nemesis import ALL
from .run import run
from .workload import Counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lin.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--round-seconds", type=float, default=120)
    parser.add_argument(
        "--faults", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}"
    )
    parser.add_argument(
        "--member-flag",
        action="append",
        default=[],
        help="an extra flotilla-node flag for every member (repeatable), e.g. "
        "--member-flag=--leader-lease-reads",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data and logs")
    parser.add_argument("--verbose", action="store_true", help="print every fault injected")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(ALL)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if not netns_available():
        print("the soak needs root (network namespaces and nftables)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="flotilla-soak-"))
    cluster = NetnsCluster(root, 3, extra_flags=["--snapshot-count=1000", *args.member_flag])
    cluster.setup_network()
    totals, faults_done = Counts(), Counter[str]()
    anomalies: list[str] = []
    verdicts: Counter[str] = Counter()
    deadline = time.monotonic() + args.minutes * 60
    flags = f", flags {' '.join(args.member_flag)}" if args.member_flag else ""
    print(f"soak: seed {seed}, {args.minutes} minutes{flags}, data and logs in {root}", flush=True)
    try:
        cluster.start()
        cluster.wait_healthy()
        while time.monotonic() < deadline:
            seconds = min(args.round_seconds, max(10.0, deadline - time.monotonic()))
            summary = run(
                cluster, rng.randrange(1 << 30), seconds, faults, log=args.verbose, dump_dir=root
            )
            print(summary.text(), flush=True)
            for name in ("ok", "fail", "unknown"):
                setattr(totals, name, getattr(totals, name) + getattr(summary.counts, name))
            faults_done.update(summary.faults)
            verdicts[summary.verdict] += 1
            anomalies += summary.anomalies
            if any("did not recover" in a for a in summary.anomalies):
                break  # nothing more to learn from a cluster that does not serve
    finally:
        cluster.stop()
        cluster.teardown_network()
    print("== soak summary")
    print(
        f"seed {seed}: {totals.ok + totals.fail + totals.unknown} operations "
        f"(ok {totals.ok}, failed {totals.fail}, unknown {totals.unknown})"
    )
    print(
        f"faults injected: {sum(faults_done.values())} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(faults_done.items()))
        + ")"
    )
    print(
        "rounds by linearizability verdict: " + ", ".join(f"{k} {v}" for k, v in verdicts.items())
    )
    print(f"anomalies found: {len(anomalies)}")
    if not args.keep and not anomalies:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
