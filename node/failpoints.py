"""Crash points for fault-injection tests, switched on only by an environment variable.

Like etcd's gofail: the driver calls ``hit("raft.before_log_write")`` at the moments where a
crash is most likely to expose a bug (between making entries durable and applying them,
inside a snapshot install, ...). Tests start a member with, for example::

    FLOTILLA_FAILPOINTS="raft.before_log_write=crash:after=3;snapshot.after_save=crash"

Each term is ``point=action[:opt=value,...]``. Actions: ``crash`` (``os._exit`` on the spot:
no flush, no cleanup, like a power cut for everything the process has not written) and
``sleep`` (``ms=``). Options: ``after=N`` (act from the N-th hit on; the first N-1 pass) and
``p=0.3`` (act with that probability; seeded by ``FLOTILLA_FAILPOINTS_SEED``).

When the variable is unset, ``hit`` is bound at import to a function that does nothing, so
the cost in production is one call of an empty function.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass

CRASH_EXIT_CODE = 97
"""Exit status of a member crashed by a failpoint (tests tell it from a real failure)."""

POINTS = (
    "raft.before_log_write",
    "raft.after_log_write",
    "raft.before_apply",
    "raft.after_apply",
    "snapshot.after_dump",
    "snapshot.before_save",
    "snapshot.after_save",
    "snapshot.before_install",
    "snapshot.after_install",
    "raftlog.before_compact",
    "raftlog.after_compact",
    "mvcc.compact",
)
"""Every point the node calls, so a misspelt name in a test is refused, not ignored."""


@dataclass
class Action:
    kind: str
    after: int = 1
    probability: float = 1.0
    sleep_ms: int = 0
    hits: int = 0


def parse(spec: str) -> dict[str, Action]:
    """Parse ``FLOTILLA_FAILPOINTS``; a mistake raises ValueError naming the term."""
    points: dict[str, Action] = {}
    for term in filter(None, (t.strip() for t in spec.split(";"))):
        name, sep, rest = term.partition("=")
        if not sep or name not in POINTS:
            raise ValueError(f"failpoint {term!r}: unknown point (known: {', '.join(POINTS)})")
        kind, _, opts = rest.partition(":")
        if kind not in ("crash", "sleep"):
            raise ValueError(f"failpoint {term!r}: action must be crash or sleep")
        action = Action(kind)
        for opt in filter(None, opts.split(",")):
            key, _, value = opt.partition("=")
            try:
                if key == "after":
                    action.after = int(value)
                elif key == "p":
                    action.probability = float(value)
                elif key == "ms":
                    action.sleep_ms = int(value)
                else:
                    raise ValueError(key)
            except ValueError:
                raise ValueError(f"failpoint {term!r}: bad option {opt!r}") from None
        points[name] = action
    return points


_active = parse(os.environ.get("FLOTILLA_FAILPOINTS", ""))
_rng = random.Random(os.environ.get("FLOTILLA_FAILPOINTS_SEED"))


def _hit(name: str) -> None:
    action = _active.get(name)
    if action is None:
        return
    action.hits += 1
    if action.hits < action.after or _rng.random() >= action.probability:
        return
    if action.kind == "sleep":
        time.sleep(action.sleep_ms / 1000)
        return
    sys.stderr.write(f"failpoint {name}: crash (hit {action.hits})\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT_CODE)


def _noop(name: str) -> None:
    pass


hit = _hit if _active else _noop
