"""What the transport has to tell the Raft core: peers it could not reach, snapshot outcomes.

The core wants ``report_unreachable(id)`` when messages to a peer were lost (so the leader
stops streaming optimistically to it and probes instead) and ``report_snapshot(id, ok)`` when
a snapshot transfer ends. The transport runs on its own tasks, so it collects these and the
driver drains them once per turn and feeds them to the core. Unreachable reports are
deduplicated within a turn: the core only needs to hear it once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple


class ReportKind(enum.Enum):
    UNREACHABLE = "unreachable"
    SNAPSHOT = "snapshot"


class Report(NamedTuple):
    kind: ReportKind
    member_id: int
    ok: bool


class Reports:
    def __init__(self, notify: Callable[[], None] | None = None) -> None:
        self._items: list[Report] = []
        self._unreachable: set[int] = set()
        self._notify = notify

    def unreachable(self, member_id: int) -> None:
        if member_id in self._unreachable:
            return
        self._unreachable.add(member_id)
        self._items.append(Report(ReportKind.UNREACHABLE, member_id, False))
        if self._notify is not None:
            self._notify()

    def snapshot(self, member_id: int, ok: bool) -> None:
        self._items.append(Report(ReportKind.SNAPSHOT, member_id, ok))
        if self._notify is not None:
            self._notify()

    def drain(self) -> list[Report]:
        items, self._items = self._items, []
        self._unreachable.clear()
        return items
