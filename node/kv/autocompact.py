"""Automatic compaction of the key-value history: etcd's ``--auto-compaction-*`` flags.

Pure decisions. Every member's housekeeping hands the clock and the current revision to a
policy, which samples them; on the leader the policy may answer with a revision to compact
to, and the leader proposes it. As in etcd, every member keeps the samples, so a new leader
knows the history's age at once.

- ``periodic``: keep at least ``retention`` seconds of history. The revision is sampled
  every tenth of min(retention, 1 h); every min(retention, 1 h), once the samples reach back
  ``retention``, the history is compacted to the newest revision sampled at least
  ``retention`` ago.
- ``revision``: keep the last ``retention`` revisions; every 5 minutes, compact to
  ``revision - retention``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from flotilla.node.durations import parse_duration

PERIODIC = "periodic"
REVISION = "revision"
MODES = (PERIODIC, REVISION)

REVISION_CHECK_SECONDS = 300.0
"""How often the revision policy looks, as etcd's."""
PERIOD_CAP_SECONDS = 3600.0
"""A periodic policy compacts at least hourly, however long the retention."""


def parse_retention(mode: str, value: str) -> float:
    """``--auto-compaction-retention`` as etcd reads it: seconds for ``periodic`` (a bare
    number counts hours, else a Go duration such as ``30m`` or ``1h30m``), a count of
    revisions for ``revision``. 0 turns automatic compaction off."""
    text = value.strip()
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is neither {PERIODIC!r} nor {REVISION!r}")
    if mode == REVISION:
        if not text.isdigit():
            raise ValueError(f"{value!r} is not a number of revisions")
        return float(int(text))
    if text.isdigit():
        return int(text) * 3600.0
    try:
        return parse_duration(text)
    except ValueError:
        pass
    raise ValueError(f"{value!r} is neither a number of hours nor a duration like 30m")


@dataclass
class Periodic:
    """Compacts to the newest revision sampled at least ``retention`` seconds ago."""

    retention: float
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    next_sample: float = 0.0
    next_compact: float = 0.0
    compacted: int = 0

    @property
    def interval(self) -> float:
        return min(self.retention, PERIOD_CAP_SECONDS)

    @property
    def keeps(self) -> str:
        return f"keeping {self.retention:g} s of history"

    def observe(self, now: float, revision: int, leader: bool) -> int | None:
        samples = self.samples
        if not samples:
            self.next_compact = now + self.retention
        if not samples or now >= self.next_sample:
            samples.append((now, revision))
            self.next_sample = now + self.interval / 10
        old_enough = now - self.retention
        # Of the samples at least `retention` old only the newest matters.
        while len(samples) > 1 and samples[1][0] <= old_enough:
            samples.popleft()
        if not leader or now < self.next_compact:
            return None
        if samples[0][0] > old_enough:  # not that much history yet: look again soon
            self.next_compact = now + self.interval / 10
            return None
        target = samples[0][1]
        self.next_compact = now + self.interval
        if target <= self.compacted:
            return None
        self.compacted = target
        return target


@dataclass
class Revisional:
    """Compacts to ``revision - retention`` every five minutes."""

    retention: int
    next_check: float | None = None
    compacted: int = 0

    @property
    def keeps(self) -> str:
        return f"keeping {self.retention} revisions"

    def observe(self, now: float, revision: int, leader: bool) -> int | None:
        if self.next_check is None:
            self.next_check = now + REVISION_CHECK_SECONDS
            return None
        if not leader or now < self.next_check:
            return None
        self.next_check = now + REVISION_CHECK_SECONDS
        target = revision - self.retention
        if target <= 0 or target <= self.compacted:
            return None
        self.compacted = target
        return target


Policy = Periodic | Revisional


def policy(mode: str, retention: float) -> Policy | None:
    """The policy for the flags, or None when automatic compaction is off."""
    if retention <= 0:
        return None
    if mode == REVISION:
        return Revisional(int(retention))
    return Periodic(retention)
