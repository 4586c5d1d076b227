"""The randomized simulation, run over many seeds in CI.

Each test runs a block of seeds for one cluster size; a failure names the seed and prints
the one-line command that replays it. For a longer soak: ``python -m tests.raft.sim --seeds
100000 --steps 5000``.
"""

from __future__ import annotations

import pytest

from .sim import run_seed

SEEDS = 500
STEPS = 2000
BLOCK = 25


@pytest.mark.parametrize("voters", [3, 5, 7])
@pytest.mark.parametrize("first", range(0, SEEDS, BLOCK))
def test_simulated_cluster_stays_safe_and_converges(voters: int, first: int) -> None:
    acked = reads = 0
    for seed in range(first, first + BLOCK):
        result = run_seed(seed, voters, STEPS)
        acked += result.writes_acked
        reads += result.reads_checked
    # The checks mean something only if the runs did real work.
    assert acked > BLOCK * 20, f"only {acked} writes acknowledged in {BLOCK} runs"
    assert reads > BLOCK * 10, f"only {reads} reads checked in {BLOCK} runs"
