"""``flotilla-node``: one member of a Flotilla cluster, as a process.

Start-up refuses, with one line and exit code 2, anything that would put data at risk: bad
flags, a data directory of another cluster or member, a newer format, corrupt records, a
member that was removed. Then it serves the etcd v3 API on the client URLs, Raft on the peer
URLs, and metrics and probes on the metrics URLs, until SIGTERM or SIGINT: then it stops
accepting, hands leadership over if it holds it, flushes, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from urllib.parse import urlsplit

import plyvel
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from . import __version__
from .api import cluster, h2grpc, maintenance, membership
from .api.cluster import ClusterService
from .api.etcdpb import flotilla_pb2, v3election_pb2, v3lock_pb2
from .api.etcdpb import rpc_pb2 as pb
from .api.grpcmetrics import GrpcCounters
from .api.handle import GRPC_SERVER_OPTIONS
from .api.http import HttpEndpoints, health_route, live_route, ready_route
from .api.maintenance import MaintenanceService
from .api.membership import MembershipService
from .config import ConfigError, NodeConfig, parse
from .kv import corruption
from .kv.errors import CorruptDataError
from .kv.state import KvStateMachine
from .logs import setup_logging
from .members import decode_members, encode_members
from .metrics import NodeMetrics
from .rpcdecode import DecodeGuard
from .server import RaftNode, is_fresh
from .storage.errors import StorageError, WriteFailure
from .storage.identity import ensure_identity, is_removed, mark_removed, stored_member_id
from .storage.leveldb import compact_all, open_db
from .storage.raftlog import RaftStorage
from .tls import TlsError, TlsMaterial, load
from .transport.peer import Transport, fetch_hash, fetch_members

log = logging.getLogger("flotilla.node")


def _hostport(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


# /livez fails once the driver loop has not turned for this long: far beyond any fsync or
# apply batch of a healthy member, short enough that a stuck one is restarted.
LIVENESS_STALL_S = 30.0

# How long a starting member waits for each peer's hash in the initial corruption check: a
# peer that does not answer in time (cut off, or hashing a very large store) is left out,
# and the start goes on.
INITIAL_CHECK_TIMEOUT_S = 15.0


class Member:
    """Everything one member runs, started and stopped together."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        # Read before the data directory is touched: a bad file is a configuration error.
        self.client_tls: TlsMaterial | None = load(cfg.client_tls, "")
        self.peer_tls: TlsMaterial | None = load(cfg.peer_tls, "peer-")
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_db(cfg.data_dir / "db")
        if is_removed(self.db):
            raise StorageError(
                f"member {cfg.name} ({cfg.member_id:x}) was removed from the cluster; "
                f"its data directory {cfg.data_dir} cannot be used again"
            )
        self.storage = RaftStorage(self.db, cfg.data_dir / "snap")
        stored = stored_member_id(self.db)
        if stored is not None and stored != cfg.member_id and not self._fresh():
            cfg = self.cfg = dataclasses.replace(cfg, member_id=stored)
        elif cfg.initial_cluster_state == "existing" and self._fresh():
            cfg = self.cfg = self._join(cfg)
        ensure_identity(self.db, cfg.cluster_id, cfg.member_id)
        self.sm = KvStateMachine(self.db, cfg)
        self.node = RaftNode(cfg, self.db, self.storage, self.sm, self._make_transport)
        self.sm.attach(self.node)
        if cfg.initial_corrupt_check and not self._fresh():
            self._initial_corrupt_check()
        self.grpc_counters = GrpcCounters()
        self.metrics = NodeMetrics(self.node, self.grpc_counters)
        self.grpc_server: h2grpc.Server | None = None
        self.http = HttpEndpoints(
            {
                "/metrics": lambda: (200, "text/plain; version=0.0.4", self.metrics.render()),
                "/health": health_route(lambda: self.node.core.lead != 0),
                "/livez": live_route(self.node.stalled_for, LIVENESS_STALL_S),
                "/readyz": ready_route(self._ready),
            }
        )

    def _fresh(self) -> bool:
        return is_fresh(self.db, self.storage.load())

    def _join(self, cfg: NodeConfig) -> NodeConfig:
        """Joining an existing cluster: learn the member list, and our id in it, from a peer."""
        mine = set(cfg.initial_advertise_peer_urls)
        peers = [u for m in cfg.initial_cluster if set(m.peer_urls) != mine for u in m.peer_urls]
        try:
            raw = asyncio.run(fetch_members(cfg.cluster_id, peers, tls=self.peer_tls))
        except ConnectionError as exc:
            raise StorageError(f"cannot join the cluster: {exc}") from exc
        members = decode_members(raw)
        me = next((m for m in members if set(m.peer_urls) == mine), None)
        if me is None:
            raise StorageError(
                f"no member of the cluster has peer URLs {','.join(sorted(mine))}; add this "
                f"member first (etcdctl member add {cfg.name} --peer-urls=...)"
            )
        if me.name:
            raise StorageError(
                f"member {me.id:x} ({me.name}) was already started with another data "
                f"directory; remove it (etcdctl member remove {me.id:x}) and add it again"
            )
        log.info("joining cluster %x as member %x", cfg.cluster_id, me.id)
        return dataclasses.replace(cfg, member_id=me.id, initial_cluster=tuple(members))

    def _initial_corrupt_check(self) -> None:
        """etcd's initial corruption check: before this member serves anyone, every peer's
        hash at our revision must match ours wherever both compacted alike. A peer that
        cannot answer (down, behind us, compacted past our revision) is left out, as etcd
        leaves it out; a mismatch refuses the start."""
        cfg = self.cfg
        local = corruption.from_hash_kv(self.sm.store.hash_kv(0))
        peers = {
            m.id: list(m.peer_urls) for m in self.node.members.values() if m.id != cfg.member_id
        }
        log.info(
            "initial corruption check at revision %d with %d peers", local.hash_revision, len(peers)
        )

        async def ask(urls: list[str]) -> corruption.Hash | None:
            try:
                resp = await fetch_hash(
                    cfg.cluster_id,
                    cfg.member_id,
                    urls,
                    local.hash_revision,
                    INITIAL_CHECK_TIMEOUT_S,
                    self.peer_tls,
                )
            except ConnectionError as exc:
                log.warning("initial corruption check: no hash from %s: %s", ",".join(urls), exc)
                return None
            return corruption.from_peer(resp)

        async def ask_all() -> list[corruption.Hash | None]:
            return await asyncio.gather(*(ask(urls) for urls in peers.values()))

        answers = asyncio.run(ask_all())
        heard = {m: h for m, h in zip(peers, answers, strict=True) if h is not None}
        mismatches = corruption.initial_mismatches(local, heard)
        if mismatches:
            found = "; ".join(f"member {s.member:x}: {s.reason}" for s in mismatches)
            raise StorageError(
                f"member {cfg.name} ({cfg.member_id:x}) found data inconsistency with peers: "
                f"{found}"
            )
        log.info("initial corruption check passed: %d of %d peers agree", len(heard), len(peers))

    def _make_transport(self, node: RaftNode) -> Transport:
        return Transport(
            self.cfg.cluster_id,
            self.cfg.member_id,
            on_message=node.deliver,
            on_lease_renew=self.sm.renew_locally,
            on_lease_remaining=self.sm.remaining_locally,
            on_hash=self.sm.hash_for_peer,
            snapshot_source=node.snapshot_for_peer,
            snapshot_sink=self.sm.loader,
            on_report=node.wake,
            on_members=lambda: encode_members(node.members.values()),
            tls=self.peer_tls,
            advertise_urls=list(self.cfg.initial_advertise_peer_urls),
        )

    def _ready(self) -> tuple[bool, str]:
        core = self.node.core
        if core.lead == 0:
            return False, "no leader"
        if core.applied < core.commit:
            return False, f"applying: applied {core.applied} of {core.commit}"
        return True, ""

    def _header(self) -> pb.ResponseHeader:
        return pb.ResponseHeader(
            cluster_id=self.cfg.cluster_id,
            member_id=self.cfg.member_id,
            revision=self.sm.store.revision,
            raft_term=self.node.core.term,
        )

    async def start(self) -> None:
        cfg = self.cfg
        server = self.grpc_server = h2grpc.Server(
            # Counted outermost, so requests the guard refuses show in the counts too.
            options=GRPC_SERVER_OPTIONS,
            interceptors=[self.grpc_counters, DecodeGuard()],
        )
        self.sm.add_services(server, self._header)
        cluster.add_to_server(
            server,
            ClusterService(
                self.node,
                self._header,
                cfg.initial_cluster_token,
                self.client_tls.channel_credentials() if self.client_tls else None,
            ),
        )
        maintenance.add_to_server(
            server,
            MaintenanceService(
                self.node,
                self._header,
                db_size=self._db_size,
                hash_kv=self.sm.hash_kv,
                snapshot=self.sm.snapshot_stream,
                defragment=self._defragment,
            ),
        )
        membership.add_to_server(server, MembershipService(self.node))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        services = [
            pb.DESCRIPTOR.services_by_name[n].full_name
            for n in ("KV", "Watch", "Lease", "Cluster", "Maintenance")
        ]
        services += [
            v3lock_pb2.DESCRIPTOR.services_by_name["Lock"].full_name,
            v3election_pb2.DESCRIPTOR.services_by_name["Election"].full_name,
            flotilla_pb2.DESCRIPTOR.services_by_name["Membership"].full_name,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ]
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(services), server
        )
        for url in cfg.listen_client_urls:
            if urlsplit(url).scheme == "https":
                assert self.client_tls is not None  # the config checked it
                server.add_secure_port(_hostport(url), self.client_tls.server_context())
            else:
                server.add_insecure_port(_hostport(url))
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.node.transport.start(cfg.listen_peer_urls[0])
        self.node.update_peers()
        await self.http.start(cfg.listen_metrics_urls)
        log.info(
            "member %s (%x) of cluster %x serving clients on %s, peers on %s, version %s",
            cfg.name,
            cfg.member_id,
            cfg.cluster_id,
            ",".join(cfg.listen_client_urls),
            ",".join(cfg.listen_peer_urls),
            __version__,
        )

    def _db_size(self) -> int:
        return sum(f.stat().st_size for f in (self.cfg.data_dir / "db").iterdir() if f.is_file())

    async def _defragment(self) -> None:
        # The state a member holds for followers that need a snapshot would keep every
        # record deleted since it was taken: hold the state as it is now first.
        await self.node.hold_state_now()
        compact_all(self.db)
        self.sm.measure_db()  # the quota check must see the space it gave back at once

    async def _close_servers(self, grace: float) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=grace)
        await self.node.transport.stop()
        await self.http.stop()

    async def run(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = asyncio.create_task(self.node.run())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            try:
                runner.result()  # the loop died, or ended: this member was removed
            except WriteFailure:
                # Stop serving at once; no flush, no hand-over: nothing more can be written.
                await self._close_servers(grace=0)
                raise
        if self.node.removed_at is not None:
            log.warning("stopping: this member was removed from the cluster")
            mark_removed(self.db)
        else:
            log.info("stopping: handing over leadership and flushing")
        await self.node.stop(hand_over=self.node.removed_at is None)
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await self._close_servers(grace=1)
        self.sm.close()
        self.db.close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse(argv)
    except ConfigError as exc:
        print(f"flotilla-node: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.name)
    try:
        member = Member(cfg)
    except CorruptDataError as exc:  # a damaged MVCC record, found while loading the index
        print(f"flotilla-node: {cfg.data_dir}: {exc.message}", file=sys.stderr)
        return 2
    except (StorageError, TlsError, plyvel.Error) as exc:
        print(f"flotilla-node: {exc}", file=sys.stderr)
        return 2
    try:
        event_loop_runner()(member.run())
    except WriteFailure as exc:
        print(f"flotilla-node: {exc}; stopped, start again once it can be written", file=sys.stderr)
        return 1
    return 0


def event_loop_runner() -> Callable[[Coroutine[object, object, None]], None]:
    """``uvloop.run`` when uvloop is installed, else ``asyncio.run``.

    uvloop's C event loop costs less per wake-up than asyncio's Python one, and a member
    wakes for every gRPC completion. ``FLOTILLA_EVENT_LOOP=asyncio`` forces the standard loop.
    """
    if os.environ.get("FLOTILLA_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run
    return asyncio.run


if __name__ == "__main__":
    sys.exit(main())
