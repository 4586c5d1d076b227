"""One Flotilla cluster and one etcd cluster for the whole compatibility suite.

Starting six processes costs a few seconds, so both clusters live for the session; every
test works under its own key prefix and leaves the membership as it found it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .clusters import Target, etcd_available, start_both


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Target]]:
    if not etcd_available():
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    flotilla, etcd = start_both(tmp_path_factory.mktemp("compat"))
    try:
        targets = {"etcd": Target("etcd", etcd), "flotilla": Target("flotilla", flotilla)}
        for t in targets.values():
            t.initial_revision = t.revision()
        yield targets
    finally:
        flotilla.stop()
        etcd.stop()
