"""Clusters of real flotilla-node processes for the tests of this folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .procs import FAILED, ProcessCluster


@pytest.fixture
def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ProcessCluster]]:
    """Start a healthy cluster (``make_cluster(3, extra_flags=[...])``); stopped afterwards,
    with the members' last log lines printed if the test failed."""
    started: list[ProcessCluster] = []

    def make(size: int, **kw: object) -> ProcessCluster:
        c = ProcessCluster(tmp_path / f"c{len(started)}", size, **kw)  # type: ignore[arg-type]
        started.append(c)
        c.start()
        c.wait_healthy()
        return c

    try:
        yield make
    finally:
        for c in started:
            if request.node.stash.get(FAILED, True):
                print(c.logs())
            c.stop()


@pytest.fixture
def cluster3(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(3)
