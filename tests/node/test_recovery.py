"""Recovering from quorum loss exactly as docs/operations.md tells it, with real processes.

Two of three members are lost for good. From the survivor: save a backup (it needs no
leader), restore it as the first member of a new cluster, start it, then add and promote new
members one at a time. Every step is the ``flotilla`` command a person would type.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from .procs import Proc, ProcessCluster, etcdctl, free_ports, wait_for
from .test_cli_ops import flotilla


def test_recover_from_quorum_loss_through_a_backup_of_the_survivor(
    make_cluster: Callable[..., ProcessCluster], tmp_path: Path
) -> None:
    old = make_cluster(3)
    for i in range(50):
        etcdctl(old.endpoints, "put", f"key{i}", f"value{i}")
    survivor, *lost = old.members

    # The survivor's backup holds what it applied: a follower that waits for nothing learns
    # the last commit index from a later message, which must reach it before the others die.
    def survivor_has_all() -> bool:
        got = etcdctl(survivor.endpoint, "get", "key49", "--print-value-only", "--consistency=s")
        return got.stdout == "value49\n"

    wait_for("the survivor to apply every write", survivor_has_all, timeout=10)
    for m in lost:
        old.kill(m)
    every = ",".join(m.endpoint for m in old.members)

    # 1. See the loss: the others do not answer, and once check-quorum has made the survivor
    #    step down (within an election timeout) it has no leader either. Until then status
    #    already says NO QUORUM, with the stale leader counted as the one healthy voter.
    def no_quorum() -> str | None:
        out = flotilla("status", f"--endpoints={every}", "--timeout=1").stdout
        return out if "cluster NO QUORUM" in out and "0/3 voters healthy" in out else None

    out = wait_for("status to report the lost quorum with no healthy voter", no_quorum, timeout=20)
    assert "unreachable" in out, out

    # 2. Back up the survivor (works without a leader) and stop it.
    backup = tmp_path / "survivor.db"
    flotilla("snapshot", "save", str(backup), f"--endpoints={survivor.endpoint}")
    old.stop()

    # 3. Restore the backup as the only member of a new cluster (new token, new identity).
    new = ProcessCluster(tmp_path / "recovered", 1, token="flotilla-recovered")
    first = new.members[0]
    node_flags = new.command(first)[3:]  # the flags flotilla-node will be started with
    out = flotilla("snapshot", "restore", str(backup), *node_flags).stdout
    assert f"restored {backup}" in out
    try:
        new.start(first)
        new.wait_healthy()
        assert etcdctl(first.endpoint, "get", "key49", "--print-value-only").stdout == "value49\n"

        # 4. Grow it back one member at a time: add as a learner, start, promote when caught up.
        for name in ("m2", "m3"):
            client, peer, metrics = free_ports(3)
            m = Proc(name, client, peer, metrics, new.root / name, new.root / f"{name}.log")
            eps = f"--endpoints={first.endpoint}"
            flotilla("members", "add", name, f"--peer-urls={m.peer_url}", eps)
            new.members.append(m)
            log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child
            m.popen = subprocess.Popen(new.command(m, "existing"), stdout=log, stderr=log)
            wait_for(
                f"{name} to catch up and be promoted",
                lambda name=name, eps=eps: (
                    flotilla("members", "promote", name, eps, check=False).returncode == 0
                ),
                timeout=30,
                interval=0.5,
            )
        new.wait_healthy()
        out = flotilla("status", f"--endpoints={new.endpoints}").stdout
        assert "cluster OK" in out and "3/3 voters healthy" in out, out
        last = new.members[-1]
        assert etcdctl(last.endpoint, "get", "key0", "--print-value-only").stdout == "value0\n"
        etcdctl(new.endpoints, "put", "after", "recovery")
    except BaseException:
        print(new.logs())
        raise
    finally:
        new.stop()
