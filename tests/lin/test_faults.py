"""Randomized faults on a real three-member cluster, judged by the checkers.

Every run prints its seed; ``python -m tests.lin.soak --seed N`` replays the same choice of
faults (the timing of a real cluster is not replayable, the faults are).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..node.netns import NetnsCluster, netns_available, running
from .nemesis import MEMBERSHIP, NETWORK, PROCESS
from .run import run

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(not netns_available(), reason="needs root for network namespaces"),
]

SEED = int(os.environ.get("FLOTILLA_FAULTS_SEED", random.randrange(1 << 30)))


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NetnsCluster]:
    c = NetnsCluster(tmp_path, 3, extra_flags=["--snapshot-count=300"])
    yield from running(c, request)


@pytest.mark.parametrize(
    ("faults", "seconds"),
    [
        pytest.param(NETWORK, 45, id="network"),
        pytest.param(PROCESS, 45, id="process"),
        pytest.param(NETWORK + PROCESS + MEMBERSHIP, 60, id="combined"),
    ],
)
def test_no_anomalies_under_random_faults(
    cluster: NetnsCluster, faults: list[str], seconds: float, tmp_path: Path
) -> None:
    summary = run(cluster, SEED, seconds, faults, dump_dir=tmp_path)
    print(summary.text())
    assert summary.counts.ok > 100, f"too little got through to judge anything: {summary.text()}"
    assert summary.verdict == "ok", summary.text()
    assert not summary.anomalies, summary.text() + "\n" + cluster.logs()
