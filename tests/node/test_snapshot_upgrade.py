"""A data directory an earlier version left in the middle of installing a snapshot.

Earlier versions saved a snapshot from the leader as a file, recorded it in the log, and
only then installed it into the state machine: a crash between the last two left the log
naming a snapshot the state machine did not hold. Now the record and the state are one
write, but a member upgraded from such a crash must still install the file at start-up, or
the entries the snapshot covers (compacted from every log) would be lost to it.
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Callable
from pathlib import Path

import plyvel

from flotilla.node.config import parse
from flotilla.node.kv.state import KvStateMachine
from flotilla.node.raft.types import HardState, Ready, Snapshot, SnapshotMeta
from flotilla.node.server import APPLIED_KEY
from flotilla.node.storage.raftlog import RaftStorage

from .procs import Proc, ProcessCluster, etcdctl, wait_for


def _get(m: Proc, key: str) -> str:
    return etcdctl(m.endpoint, "get", key, "--print-value-only", "--consistency=s").stdout


def _state_of(m: Proc) -> tuple[SnapshotMeta, bytes]:
    """A stopped member's state as the snapshot its leader would send: metadata and data."""
    db = plyvel.DB(str(m.data_dir / "db"))
    try:
        (applied,) = struct.unpack(">Q", db.get(APPLIED_KEY))
        state = RaftStorage(db, m.data_dir / "snap").load()
        term = next(e.term for e in state.entries if e.index == applied)
        sm = KvStateMachine(db, parse([f"--data-dir={m.data_dir}"], environ={}))
        data = sm.dump(sm.view())
        sm.close()
        return SnapshotMeta(applied, term, state.snapshot.conf), data
    finally:
        db.close()


def _record_without_installing(m: Proc, meta: SnapshotMeta, data: bytes) -> None:
    """What an earlier version left when it crashed after recording the snapshot: the file,
    and the log pointing at it, the state machine untouched."""
    db = plyvel.DB(str(m.data_dir / "db"))
    try:
        storage = RaftStorage(db, m.data_dir / "snap")
        hard = storage.load().hard_state
        storage.save_snapshot(meta, data)
        batch = db.write_batch(sync=True)
        hard_state = HardState(max(hard.term, meta.term), hard.vote, meta.index)
        storage.stage(batch, Ready(hard_state=hard_state, snapshot=Snapshot(meta, data)))
        batch.write()
    finally:
        db.close()


def test_a_recorded_snapshot_the_state_machine_missed_is_installed_at_start(
    make_cluster: Callable[..., ProcessCluster], tmp_path: Path
) -> None:
    c = make_cluster(3)
    ahead, _, behind = c.members
    etcdctl(c.endpoints, "put", "early", "1")
    wait_for("the last member to apply the first write", lambda: _get(behind, "early") == "1\n")
    c.kill(behind, signal.SIGTERM)
    for i in range(20):
        etcdctl(c.endpoints, "put", f"late{i}", f"v{i}")
    wait_for("a member to apply every write", lambda: _get(ahead, "late19") == "v19\n")
    c.stop()
    meta, data = _state_of(ahead)
    _record_without_installing(behind, meta, data)

    c.start(behind)  # alone: no leader to catch up from, so what it serves is what it holds
    wait_for("the member to serve", lambda: behind.http("/livez")[0] == 200)
    assert _get(behind, "late19") == "v19\n"
    assert _get(behind, "early") == "1\n"
    assert (
        f"installed snapshot {meta.index} that a crash interrupted" in behind.log_path.read_text()
    )
