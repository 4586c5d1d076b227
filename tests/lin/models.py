"""Sequential models of what the workloads do, for the linearizability checker.

The register: one etcd key, read with a linearizable Range, written with Put, and
compare-and-set through a Txn comparing ``mod_revision``. Its state is ``(value,
mod_revision)``; an absent key is ``(None, 0)``. Every written value is unique in a history,
so a read names the write it saw.

Inputs and outputs:

- ``("get", key)`` → ``(value or None, mod_revision)``
- ``("put", key, value)`` → the revision of the write, or ``None`` if unknown
- ``("cas", key, expected_mod_revision, value)`` → ``(True, revision)`` or, when the
  compare failed, ``(False, value seen, mod_revision seen)`` (the Txn's failure branch reads
  the key, so a failed compare-and-set is also a read); ``None`` if unknown

A key's ``mod_revision`` strictly increases with each write, so a put whose revision is not
above the current one is an anomaly too (a stale leader writing behind a newer one).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .checker import Model, Op

Register = tuple[str | None, int | None]
"""(value, mod_revision); the revision is ``None`` after a write whose revision nobody saw."""


def register_step(state: Register, inp: Any, out: Any) -> tuple[bool, Register]:
    value, rev = state
    kind = inp[0]
    if kind == "get":
        got_value, got_rev = out
        if got_value != value or (rev is not None and got_rev != rev):
            return False, state
        return True, (got_value, got_rev)  # the read tells the revision of the write it saw
    if kind == "put":
        if out is None:
            return True, (inp[2], None)
        return (rev is None or out > rev), (inp[2], out)
    if kind == "cas":
        expected, new_value = inp[2], inp[3]
        if out is None:
            # Unknown outcome: it applied exactly when the compare held. With the revision
            # unknown, no client could have expected it (it learns revisions by reading).
            return True, ((new_value, None) if rev == expected else state)
        if out[0]:
            new_rev = out[1]
            return (rev == expected and new_rev > expected), (new_value, new_rev)
        _, seen_value, seen_rev = out
        if rev == expected or seen_value != value or (rev is not None and seen_rev != rev):
            return False, state
        return True, (seen_value, seen_rev)
    raise ValueError(f"unknown register operation {inp!r}")


def resolve_unknown_writes(history: Sequence[Op]) -> list[Op]:
    """Give an unknown write the revision a read saw for its (unique) value; drop the rest.

    A write that somebody read certainly took effect, with that revision; saying so keeps the
    search from guessing. Its completion time stays unknown (infinite).
    """
    seen = observed(history)
    out = []
    for op in history:
        if op.output is None and op.input[0] in ("put", "cas"):
            rev = seen.get((op.input[1], op.input[-1]))
            if rev is None:
                # Never seen by anyone: had it taken effect, only another write could come
                # next (every read and failed compare names the value it saw), so leaving
                # it out loses no order. Keeping it would multiply the search by its places.
                continue
            result = rev if op.input[0] == "put" else (True, rev)
            op = dataclasses.replace(op, output=result)
        out.append(op)
    return out


def observed(history: Sequence[Op]) -> dict[tuple[str, str], int]:
    """(key, value) -> the mod_revision a read or a failed compare-and-set saw it at."""
    seen: dict[tuple[str, str], int] = {}
    for op in history:
        out = op.output
        if out is None:
            continue
        if op.input[0] == "get" and out[0] is not None:
            seen[(op.input[1], out[0])] = out[1]
        elif op.input[0] == "cas" and not out[0] and out[1] is not None:
            seen[(op.input[1], out[1])] = out[2]
    return seen


def by_key(history: Sequence[Op]) -> list[list[Op]]:
    parts: dict[str, list[Op]] = defaultdict(list)
    for op in resolve_unknown_writes(history):
        parts[op.input[1]].append(op)
    return list(parts.values())


def describe(op: Op) -> str:
    out = "unknown" if op.output is None else repr(op.output)
    return f"{' '.join(map(str, op.input))} -> {out}"


REGISTER: Model[Register] = Model(
    init=(None, 0), step=register_step, partition=by_key, describe=describe
)
