"""The watch hub against a model, under random interleavings.

A member's store follows a leader's with lag, sometimes jumping ahead by installing the
leader's snapshot; watchers of one prefix start at random revisions (past, current, future)
on streams that are drained a little at a time, with queues small enough to make watchers
lag and catch up. Every watcher must see exactly the leader's history from its start: no
event before it, none twice, none missing, in revision order.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from machine import Machine

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.kv.watch import WatchHub, WatchStream

Seen = list[tuple[int, bytes]]


def _take(stream: WatchStream, n: int, into: Seen) -> None:
    for resp in stream.take(n):
        assert not resp.canceled, resp
        into.extend((e.kv.mod_revision, e.kv.key) for e in resp.events)


@pytest.mark.parametrize("seed", range(40))
def test_every_watcher_sees_the_history_from_its_start(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    leader, member = Machine(tmp_path / "leader"), Machine(tmp_path / "member")
    try:
        hub = WatchHub(
            member.store,
            progress_interval=1000.0,
            max_pending=rng.choice([1, 2, 3, 8]),
            catch_up_events=rng.choice([1, 2, 5, 50]),
        )
        history: Seen = []
        behind: list[list[tuple[int, bytes]]] = []  # the leader's batches not applied here
        watchers: list[tuple[WatchStream, int, Seen]] = []
        for step in range(300):
            r = rng.random()
            if r < 0.3:  # the leader commits a batch
                keys = [b"p/k%d" % rng.randrange(8) for _ in range(rng.randint(1, 15))]
                entries = leader.entries(*(pb.PutRequest(key=k, value=b"%d" % step) for k in keys))
                out = leader.apply_entries(entries)
                history.extend((ev.kv.mod_revision, ev.kv.key) for ev in out.events)
                behind.append(entries)
            elif r < 0.45 and behind:  # the member applies some of what it lacks
                k = rng.randint(1, len(behind))
                out = member.apply_entries([e for b in behind[:k] for e in b])
                del behind[:k]
                hub.notify(out.events, out.revision)
            elif r < 0.5 and behind:  # ... or installs the leader's snapshot
                member.install_snapshot_of(leader)
                hub.restored()
                behind.clear()
            elif r < 0.62:
                start = max(1, member.store.revision + rng.randint(-40, 30))
                stream = hub.open_stream()
                stream.create(
                    pb.WatchCreateRequest(key=b"p/", range_end=b"p0", start_revision=start)
                )
                watchers.append((stream, start, []))
            elif watchers:
                stream, _, seen = rng.choice(watchers)
                _take(stream, rng.randint(1, 4), seen)
        for stream, start, seen in watchers:
            while stream.queue:
                _take(stream, 50, seen)
            expected = [h for h in history if h[0] >= start]
            assert seen == expected[: len(seen)], f"watch from {start}: {seen[:5]}..."
            # Whatever the member has applied, the watcher has seen.
            assert len(seen) == len([h for h in expected if h[0] <= member.store.revision])
    finally:
        leader.close()
        member.close()
