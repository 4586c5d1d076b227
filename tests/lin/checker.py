"""A linearizability checker: Wing & Gong's search with porcupine's improvements.

A history is a list of operations, each with the time it was invoked and the time it
completed (monotonic clock) and what it returned. It is linearizable if every operation can
be given one instant between its invocation and completion such that running them one by
one in that order on a sequential model gives the outputs observed.

The search (Wing & Gong 1993, Lowe 2017, porcupine by Athalye):

- the history is **partitioned** (per key for a key-value store): each partition is
  checked alone, so the search space is the product of small ones, not one huge one;
- the search walks a linked list of call and return events, tries to linearize a call whose
  operation is pending, and backtracks when it meets a return whose call it has not placed;
- it **memoizes** ``(set of linearized operations as a bitmask, model state)``: reaching the
  same pair twice by different orders cannot lead anywhere new;
- it has a **time budget**: past it the answer is ``UNKNOWN``, never a guess.

An operation whose outcome is unknown (a client timeout: it may or may not have taken
effect) completes at infinity: it may be placed anywhere after its invocation, including
after everything else, which is the same as never having happened. Its output is ``None``
and the model accepts any outcome for it.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True)
class Op:
    """One operation of a history. ``ret`` is ``math.inf`` when the outcome is unknown."""

    client: int
    input: Any
    output: Any
    call: float
    ret: float = math.inf

    @property
    def unknown(self) -> bool:
        return self.ret == math.inf


@dataclass(frozen=True)
class Model(Generic[S]):
    """A sequential specification.

    ``step(state, input, output)`` says whether the operation may return ``output`` in
    ``state`` (``output`` is ``None`` for an unknown outcome) and gives the next state.
    ``partition`` splits a history into independent parts (e.g. one per key).
    """

    init: S
    step: Callable[[S, Any, Any], tuple[bool, S]]
    partition: Callable[[Sequence[Op]], list[list[Op]]] = lambda ops: [list(ops)]
    describe: Callable[[Op], str] = repr


class Verdict(enum.Enum):
    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"  # the time budget ran out


@dataclass
class Result:
    verdict: Verdict
    bad_partition: list[Op] = field(default_factory=list)
    longest_prefix: list[Op] = field(default_factory=list)
    """For an illegal partition: the longest linearization the search found of it."""

    def explain(self, describe: Callable[[Op], str] = repr, limit: int = 60) -> str:
        if self.verdict != Verdict.ILLEGAL:
            return self.verdict.value
        lines = ["not linearizable; the partition, by invocation time:"]
        t0 = min(op.call for op in self.bad_partition)
        for op in sorted(self.bad_partition, key=lambda o: o.call)[:limit]:
            ret = "?" if op.unknown else f"{op.ret - t0:8.3f}"
            lines.append(f"  [{op.call - t0:8.3f} .. {ret}] c{op.client} {describe(op)}")
        lines.append("longest linearization found:")
        lines.extend(f"  {describe(op)}" for op in self.longest_prefix[-20:])
        return "\n".join(lines)


class _Node:
    """One call or return event in the doubly linked list the search walks."""

    __slots__ = ("id", "is_call", "match", "next", "op", "prev", "time")

    def __init__(self, id: int, is_call: bool, op: Op | None, t: float) -> None:
        self.id = id
        self.is_call = is_call
        self.op = op
        self.time = t
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _build(ops: Sequence[Op]) -> _Node:
    events: list[_Node] = []
    for i, op in enumerate(ops):
        call, ret = _Node(i, True, op, op.call), _Node(i, False, None, op.ret)
        call.match = ret
        events += [call, ret]
    # At equal times a call goes first: the two operations then overlap, which allows more
    # orders, never fewer (a checker must not report an anomaly the clocks cannot show).
    events.sort(key=lambda n: (n.time, 0 if n.is_call else 1))
    head = _Node(-1, False, None, -math.inf)
    prev = head
    for n in events:
        prev.next, n.prev = n, prev
        prev = n
    return head


def _lift(call: _Node) -> None:
    """Take a call and its return out of the list."""
    assert call.prev is not None and call.match is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    assert ret.prev is not None
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    """Put them back (in the reverse order of ``_lift``)."""
    ret = call.match
    assert ret is not None and ret.prev is not None and call.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


class _OutOfTime(Exception):
    pass


def _check_partition(model: Model[S], ops: list[Op], deadline: float) -> tuple[bool, list[Op]]:
    head = _build(ops)
    state = model.init
    linearized = 0
    cache: set[tuple[int, S]] = {(0, state)}
    calls: list[tuple[_Node, S]] = []
    longest: list[Op] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps & 0x3FF == 0 and time.monotonic() > deadline:
            raise _OutOfTime
        assert entry is not None
        if entry.is_call:
            assert entry.op is not None
            ok, new_state = model.step(state, entry.op.input, entry.op.output)
            if ok:
                bit = 1 << entry.id
                key = (linearized | bit, new_state)
                if key not in cache:
                    cache.add(key)
                    calls.append((entry, state))
                    state, linearized = new_state, linearized | bit
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not yet placed: backtrack.
            if len(calls) > len(longest):
                longest = [c.op for c, _ in calls if c.op is not None]
            if not calls:
                return False, longest
            call, state = calls.pop()
            linearized &= ~(1 << call.id)
            _unlift(call)
            entry = call.next
    return True, []


def check(model: Model[S], history: Sequence[Op], budget: float = 10.0) -> Result:
    """Check ``history`` against ``model`` within ``budget`` seconds."""
    deadline = time.monotonic() + budget
    unknown = False
    for part in sorted(model.partition(history), key=len):
        try:
            ok, longest = _check_partition(model, part, deadline)
        except _OutOfTime:
            unknown = True
            continue
        if not ok:
            return Result(Verdict.ILLEGAL, part, longest)
    return Result(Verdict.UNKNOWN if unknown else Verdict.OK)
