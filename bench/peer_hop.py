"""What one peer message costs: gRPC streams against the floor of a plain TCP socket.

Two processes, as two members: A sends B a heartbeat, B answers it, A sends the next on
receiving the answer, for ``--seconds``. Both run on uvloop, as members do, and both encode
and check the same sealed batches (``codec.seal`` / ``codec.open_batch``); what differs is
how a batch travels:

- ``grpc``: Flotilla's transport (``flotilla.node.transport.Transport``), one client stream
  each way, as between members;
- ``tcp``: one asyncio connection each way, a 4-byte length before each batch: the least a
  transport can do per message on this machine.

Reports round trips per second and the CPU both processes spent per round trip (user +
system, from /proc). A round trip is two messages, each written by one member and read by
the other, so per-message CPU is half of it.

    python -m bench.peer_hop [--seconds 5] [--mode grpc,tcp]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from flotilla.node.raft.types import Message, MessageType
from flotilla.node.transport import Transport
from flotilla.node.transport.codec import open_batch, seal
from flotilla.node.transport.pb import raftpeer_pb2 as pb

CLUSTER = 7
_LEN = struct.Struct(">I")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _answer(me: int, m: Message) -> Message:
    kind = MessageType.HEARTBEAT_RESP if m.type == MessageType.HEARTBEAT else MessageType.HEARTBEAT
    return Message(kind, m.frm, me, 1, commit=m.commit + 1)


class _TcpPeer:
    """One member's end: a server for what others send, a connection to each of them."""

    def __init__(self, me: int, on_message: Callable[[Message], None]) -> None:
        self.me = me
        self.on_message = on_message
        self.port = 0
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._serving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for w in self._writers.values():
            w.close()
        self._server.close()
        if self._serving:  # until the other end has closed too
            await asyncio.wait(self._serving, timeout=2)

    async def connect(self, peer: int, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        self._writers[peer] = writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            while True:
                (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
                for m in open_batch(pb.MessageBatch.FromString(await reader.readexactly(n))):
                    self.on_message(m)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()  # the other end closed: the run is over

    def send(self, messages: list[Message]) -> None:
        raw = seal(CLUSTER, self.me, messages).SerializeToString()
        self._writers[messages[0].to].write(_LEN.pack(len(raw)) + raw)


async def _member(mode: str, me: int, pipe: Connection, first: bool, seconds: float) -> None:
    done = asyncio.get_running_loop().create_future()
    trips = 0
    peer: _TcpPeer | Transport

    def on_message(m: Message) -> None:
        nonlocal trips
        if first:
            trips += 1
        if not done.done():
            peer.send([_answer(me, m)])

    async def renew(lease_id: int) -> int:
        return 0

    other = 2 if me == 1 else 1
    if mode == "tcp":
        peer = _TcpPeer(me, on_message)
        await peer.start()
    else:
        peer = Transport(CLUSTER, me, on_message, renew, lambda: None)
        await peer.start("127.0.0.1:0")
    pipe.send(peer.port)
    port = await asyncio.to_thread(pipe.recv)
    if isinstance(peer, _TcpPeer):
        await peer.connect(other, port)
    else:
        peer.set_peers({other: [f"127.0.0.1:{port}"]})
    pipe.send("ready")
    await asyncio.to_thread(pipe.recv)  # both ends can send
    if first:
        peer.send([Message(MessageType.HEARTBEAT, other, me, 1)])
        await asyncio.sleep(0.5)  # warm up: connections made, caches filled
        started, trips = time.perf_counter(), 0
        pipe.send("mark")
        await asyncio.sleep(seconds)
        pipe.send(("done", trips, time.perf_counter() - started))
    await asyncio.to_thread(pipe.recv)  # the end, once both processes are measured
    done.set_result(None)
    await asyncio.sleep(0.05)  # the last answer in flight
    await peer.stop()


def _run_member(mode: str, me: int, pipe: Connection, first: bool, seconds: float) -> None:
    import uvloop

    # The peer going away at the end breaks the streams; that is no news here.
    logging.getLogger("flotilla").setLevel(logging.CRITICAL)
    uvloop.run(_member(mode, me, pipe, first, seconds))


def measure(mode: str, seconds: float) -> tuple[float, float]:
    """(round trips per second, CPU milliseconds per round trip) for one mode."""
    ctx = mp.get_context("spawn")
    a_pipe, a_child = ctx.Pipe()
    b_pipe, b_child = ctx.Pipe()
    a = ctx.Process(target=_run_member, args=(mode, 1, a_child, True, seconds))
    b = ctx.Process(target=_run_member, args=(mode, 2, b_child, False, seconds))
    a.start()
    b.start()
    assert a.pid is not None and b.pid is not None
    a_port, b_port = a_pipe.recv(), b_pipe.recv()
    a_pipe.send(b_port)
    b_pipe.send(a_port)
    assert a_pipe.recv() == b_pipe.recv() == "ready"
    a_pipe.send("go")
    b_pipe.send("go")
    assert a_pipe.recv() == "mark"
    cpu0 = _cpu_seconds(a.pid) + _cpu_seconds(b.pid)
    _, trips, elapsed = a_pipe.recv()
    cpu = _cpu_seconds(a.pid) + _cpu_seconds(b.pid) - cpu0
    a_pipe.send("end")
    b_pipe.send("end")
    for p in (a, b):
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    return trips / elapsed, cpu * 1000 / max(trips, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", default="grpc,tcp", help="comma-separated: grpc, tcp")
    args = parser.parse_args()
    for mode in args.mode.split(","):
        rate, cpu = measure(mode, args.seconds)
        print(f"{mode}: {rate:,.0f} round trips/s, {cpu:.3f} ms CPU per round trip", flush=True)


if __name__ == "__main__":
    main()
