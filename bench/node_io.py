"""Throughput of a member's I/O edges: Raft storage on LevelDB and the gRPC transport.

storage: each turn stages ``--batch`` entries plus hard state into one write batch and
writes it with ``sync=True``, as the driver does; reports turns (fsyncs) and entries per
second.

transport: two transports in one process on loopback; each turn sends one MsgApp carrying
``--batch`` entries of ``--size`` bytes, as a leader does per follower per turn; reports
entries per second delivered in order. Both ends share one event loop and one core, so this
is a lower bound for two processes.

    python -m bench.node_io [--seconds 3] [--batch 100] [--size 256]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from flotilla.node.raft.types import Entry, HardState, Message, MessageType, Ready
from flotilla.node.storage import RaftStorage
from flotilla.node.storage.leveldb import open_db
from flotilla.node.transport import Transport


def bench_storage(seconds: float, batch: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = open_db(Path(tmp) / "db")
        storage = RaftStorage(db, Path(tmp) / "snap")
        payload = b"x" * size
        index = turns = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            ents = [Entry(1, index + i + 1, payload) for i in range(batch)]
            index += batch
            with db.write_batch(sync=True) as wb:
                storage.stage(wb, Ready(hard_state=HardState(1, 1, index), entries=ents))
            turns += 1
        elapsed = time.perf_counter() - start
        db.close()
    print(f"storage: {turns / elapsed:,.0f} synced turns/s, {index / elapsed:,.0f} entries/s")


async def bench_transport(seconds: float, batch: int, size: int) -> None:
    received = 0

    def on_message(m: Message) -> None:
        nonlocal received
        received += len(m.entries)

    async def renew(lease_id: int) -> int:
        return 0

    b = Transport(1, 2, on_message, renew, lambda: None)
    await b.start("127.0.0.1:0")
    a = Transport(1, 1, lambda m: None, renew, lambda: None)
    await a.start("127.0.0.1:0")
    a.set_peers({2: [f"127.0.0.1:{b.port}"]})
    payload = b"x" * size
    index = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ents = [Entry(1, index + i + 1, payload) for i in range(batch)]
        a.send([Message(MessageType.APP, 2, 1, 1, index=index, log_term=1, entries=ents)])
        index += batch
        while index - received > 8 * batch:  # keep a few turns in flight, like a pipeline
            await asyncio.sleep(0)
    while received < index:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    print(f"transport: {received / elapsed:,.0f} entries/s delivered ({batch} per message)")
    await a.stop()
    await b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    bench_storage(args.seconds, args.batch, args.size)
    asyncio.run(bench_transport(args.seconds, args.batch, args.size))


if __name__ == "__main__":
    main()
