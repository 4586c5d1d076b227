"""A single-member stand-in for the driver, serving the real etcd services over real gRPC.

It implements ``NodeHandle`` by applying each proposal directly through the real Applier on
a real LevelDB: there is no Raft here, because the services are the subject. It runs the
member's own gRPC server (``h2grpc``) on its own event loop in a background thread, so tests
(and etcdctl) talk to it as to any etcd endpoint, and it plays the leader's part for leases:
it polls the lessor for expired leases and proposes their expiry.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from flotilla.node.api import h2grpc
from flotilla.node.api.etcdpb import rpc_pb2
from flotilla.node.api.handle import GRPC_SERVER_OPTIONS
from flotilla.node.api.services import add_services
from flotilla.node.kv import requests
from flotilla.node.kv.apply import Applier
from flotilla.node.kv.lease import Lessor
from flotilla.node.kv.store import MvccStore
from flotilla.node.kv.watch import WatchHub
from flotilla.node.storage.leveldb import open_db

T = TypeVar("T")

CLUSTER_ID = 0xC1C1
MEMBER_ID = 0x3E3E


class SingleMember:
    """``NodeHandle`` for one member that is always the leader."""

    def __init__(self, path: Path, **hub_kw: Any) -> None:
        self.db: Any = open_db(path)
        self.store = MvccStore(self.db)
        self.lessor = Lessor(self.db, self.store)
        self.applier = Applier(self.store, self.lessor)
        self.watch_hub = WatchHub(self.store, **hub_kw)
        self.index = 0
        self.proposals = 0
        self.barriers = 0
        self.lessor.promote(time.monotonic())

    def header(self) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(cluster_id=CLUSTER_ID, member_id=MEMBER_ID, raft_term=1)

    async def propose(self, request: Any) -> object:
        self.proposals += 1
        self.index += 1
        request_id = os.urandom(16)
        data = requests.encode(request_id, request)
        batch = self.db.write_batch()
        out = self.applier.apply([(self.index, data)], batch)
        batch.write()
        self.store.batch_written()
        self.watch_hub.notify(out.events, out.revision)
        ((got_id, result),) = out.results
        assert got_id == request_id
        return result

    async def read_barrier(self) -> None:
        self.barriers += 1

    async def lease_renew(self, lease_id: int) -> int:
        return self.lessor.renew(lease_id, time.monotonic())

    async def lease_remaining(self, lease_id: int) -> int | None:
        return self.lessor.time_to_live(lease_id, now=time.monotonic()).TTL

    async def housekeeping(self, interval: float = 0.05) -> None:
        """The driver's timer duties: lease expiry (as leader) and the watch hub's tick."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            expired = self.lessor.expired(now)
            if expired:
                await self.propose(requests.LeaseExpire(tuple(expired)))
            self.watch_hub.tick(now)


class Served:
    """A SingleMember behind the client gRPC server on loopback, run in a background thread."""

    def __init__(self, path: Path, **hub_kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.member: SingleMember = self.call(lambda: SingleMember(path, **hub_kw))
        self.port: int = self.run(self._start())
        self.endpoint = f"127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self.server = h2grpc.Server(options=GRPC_SERVER_OPTIONS)
        add_services(self.server, self.member)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self._housekeeping = asyncio.create_task(self.member.housekeeping())
        return int(port)

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop thread (the hub and lessor live there)."""
        fut: Future[T] = Future()

        def go() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(go)
        return fut.result(timeout=30)

    def revision(self) -> int:
        """The member's store revision now (an empty store is at 1, as etcd's)."""
        return self.call(lambda: self.member.store.revision)

    def close(self) -> None:
        async def stop() -> None:
            self._housekeeping.cancel()
            await self.server.stop(None)

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.member.db.close()
