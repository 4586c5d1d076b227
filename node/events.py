"""The member's Raft events as structured log lines: one line per event, never per message.

Every event carries the Raft term and the commit and applied indexes at the moment it
happened (the member's name is added by the log formatter), so lines from all members of a
cluster can be merged and read as one story. The driver calls these at the points where
something changed; deciding *whether* something changed stays in the driver's bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .raft.core import RaftCore
from .raft.types import ConfState

log = logging.getLogger("flotilla.raft")

SLOW_FSYNC_SECONDS = 0.1
"""A synced write slower than this is reported (etcd warns at 1s for its WAL; ours is smaller
because every write batch waits on it)."""
SLOW_FSYNC_REPORT_INTERVAL = 1.0
"""On a slow disk every write is slow: report at most once a second, with the count."""


def _ids(ids: Iterable[int]) -> list[str]:
    return sorted(f"{i:x}" for i in ids)


def raft_event(level: int, msg: str, core: RaftCore, **fields: Any) -> None:
    doc = {"term": core.term, "index": core.commit, "applied": core.applied, **fields}
    log.log(level, msg, extra={"fields": doc})


def role_changed(core: RaftCore, old: str) -> None:
    raft_event(
        logging.INFO,
        f"became {core.role.value}",
        core,
        event="role",
        role=core.role.value,
        previous=old,
    )


def leader_changed(core: RaftCore, leader: int) -> None:
    who = f"{leader:x}" if leader else "unknown"
    raft_event(logging.INFO, f"leader is now {who}", core, event="leader", leader=who)


def membership_changed(core: RaftCore, conf: ConfState, index: int) -> None:
    phase = "joint" if conf.joint else "final"
    raft_event(
        logging.INFO,
        f"configuration at index {index} applied ({phase}): voters {','.join(_ids(conf.voters))}",
        core,
        event="membership",
        conf_index=index,
        voters=_ids(conf.voters),
        outgoing=_ids(conf.outgoing),
        learners=_ids(conf.learners),
        joint=conf.joint,
    )


def snapshot_saved(core: RaftCore, index: int, compacted_to: int, seconds: float) -> None:
    raft_event(
        logging.INFO,
        f"snapshot at index {index}, log compacted to {compacted_to}",
        core,
        event="snapshot",
        snapshot_index=index,
        compacted_to=compacted_to,
        duration_ms=round(seconds * 1000, 1),
    )


def snapshot_installed(core: RaftCore, index: int, term: int, seconds: float) -> None:
    raft_event(
        logging.INFO,
        f"installed snapshot at index {index} (term {term})",
        core,
        event="snapshot_install",
        snapshot_index=index,
        snapshot_term=term,
        duration_ms=round(seconds * 1000, 1),
    )


def stood_still(core: RaftCore, seconds: float) -> None:
    """The driver's loop did not run for ``seconds`` (a stopped process, a starved machine):
    the lost ticks are skipped, and a read lease measured in them is dropped."""
    lease = "; its read lease is dropped" if core.lease_ticks > 0 else ""
    raft_event(
        logging.WARNING,
        f"stood still for {seconds * 1000:.0f} ms: the missed ticks are skipped{lease}",
        core,
        event="stood_still",
        duration_ms=round(seconds * 1000, 1),
    )


class SlowFsync:
    """Reports synced writes slower than ``SLOW_FSYNC_SECONDS``, at most once per interval."""

    def __init__(self) -> None:
        self.last_report = float("-inf")
        self.unreported = 0

    def observe(self, core: RaftCore, seconds: float, now: float) -> bool:
        """Record one write; returns whether it was logged."""
        if seconds < SLOW_FSYNC_SECONDS:
            return False
        self.unreported += 1
        if now - self.last_report < SLOW_FSYNC_REPORT_INTERVAL:
            return False
        raft_event(
            logging.WARNING,
            f"slow fsync: {seconds * 1000:.0f} ms to make entries durable",
            core,
            event="slow_fsync",
            duration_ms=round(seconds * 1000, 1),
            slow_writes=self.unreported,
        )
        self.last_report = now
        self.unreported = 0
        return True
