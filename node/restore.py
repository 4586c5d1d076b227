"""``flotilla snapshot restore``: data directories for a new cluster from a backup file.

As ``etcdutl snapshot restore``: run it once per member of the new cluster, with that
member's flags (the same names as flotilla-node's), then start each member on its data
directory. The new cluster keeps the backup's keys, revisions and leases; its member list
and identity come from the flags, so it can never be mistaken for the old cluster.
"""

from __future__ import annotations

import struct
from pathlib import Path

from . import backup
from .config import NodeConfig
from .kv.state import KvStateMachine
from .members import encode_members
from .raft.core import InitialState
from .raft.types import HardState, Ready, SnapshotMeta
from .server import APPLIED_KEY, MEMBERS_KEY
from .storage.identity import ensure_identity
from .storage.leveldb import open_db
from .storage.raftlog import RaftStorage

RESTORED_INDEX = 1
RESTORED_TERM = 1


class RestoreError(Exception):
    pass


def restore(backup_file: Path, cfg: NodeConfig) -> Path:
    """Create ``cfg.data_dir`` holding the backup's state; returns the data directory."""
    state = backup.decode(backup_file.read_bytes())
    if cfg.data_dir.exists() and any(cfg.data_dir.iterdir()):
        raise RestoreError(f"data dir {cfg.data_dir} exists and is not empty")
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(cfg.data_dir / "db")
    try:
        ensure_identity(db, cfg.cluster_id, cfg.member_id)
        sm = KvStateMachine(db, cfg)
        members = list(cfg.initial_cluster)
        applied = struct.pack(">Q", RESTORED_INDEX)
        sm.restore(state, [(APPLIED_KEY, applied), (MEMBERS_KEY, encode_members(members))])
        # The snapshot a leader will send to members that fall behind: this state, with the
        # new member list.
        data = sm.dump(sm.view())
        conf = InitialState.bootstrap(m.id for m in members).snapshot.conf
        meta = SnapshotMeta(RESTORED_INDEX, RESTORED_TERM, conf)
        storage = RaftStorage(db, cfg.data_dir / "snap")
        storage.save_snapshot(meta, data)
        batch = db.write_batch(sync=True)
        storage.record_snapshot(batch, meta)
        hard = HardState(term=RESTORED_TERM, vote=0, commit=RESTORED_INDEX)
        storage.stage(batch, Ready(hard_state=hard))
        batch.write()
        sm.close()
    finally:
        db.close()
    return cfg.data_dir


def run(argv: list[str]) -> int:
    """Entry point: ``flotilla snapshot restore FILE <flotilla-node flags>``."""
    import sys

    from .config import ConfigError, parse

    if not argv or argv[0].startswith("-"):
        print("usage: flotilla snapshot restore FILE --name ... --data-dir ...", file=sys.stderr)
        return 2
    try:
        cfg = parse(argv[1:])
        path = restore(Path(argv[0]), cfg)
    except (ConfigError, RestoreError, backup.BackupCorrupt, OSError) as exc:
        print(f"flotilla snapshot restore: {exc}", file=sys.stderr)
        return 2
    print(f"restored {argv[0]} into {path} for member {cfg.name} ({cfg.member_id:x})")
    return 0
