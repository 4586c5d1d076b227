"""The ``flotilla`` command's calls to members: plain synchronous gRPC, etcd's services.

Every call has a deadline; answers are turned into ``render``'s plain records at once, so
the rest of the command never sees protobuf or gRPC errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from ..api.etcdpb import rpc_pb2 as pb
from ..api.etcdpb import rpc_pb2_grpc
from .endpoints import normalize
from .render import MemberInfo, StatusInfo

TIMEOUT = 3.0
T = TypeVar("T")


class CtlError(Exception):
    """A request every endpoint refused; the message says what the member said."""


def describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'ERROR'}: {details}"


@dataclass
class Conn:
    endpoint: str
    channel: grpc.Channel

    # The generated stubs are untyped: their calls are typed by what this module reads back.
    @property
    def cluster(self) -> Any:
        stub: Any = rpc_pb2_grpc.ClusterStub
        return stub(self.channel)

    @property
    def maintenance(self) -> Any:
        stub: Any = rpc_pb2_grpc.MaintenanceStub
        return stub(self.channel)


class Client:
    def __init__(self, endpoints: Sequence[str], timeout: float = TIMEOUT) -> None:
        if not endpoints:
            raise CtlError("no endpoints")
        self.endpoints = [normalize(e) for e in endpoints]
        self.timeout = timeout
        self._conns: dict[str, Conn] = {}

    def conn(self, endpoint: str) -> Conn:
        endpoint = normalize(endpoint)
        if endpoint not in self._conns:
            channel = grpc.insecure_channel(
                endpoint, options=[("grpc.max_receive_message_length", -1)]
            )
            self._conns[endpoint] = Conn(endpoint, channel)
        return self._conns[endpoint]

    def close(self) -> None:
        for c in self._conns.values():
            c.channel.close()
        self._conns.clear()

    def first(self, call: Callable[[Conn], T]) -> T:
        """``call`` on each endpoint in turn until one answers."""
        errors = []
        for e in self.endpoints:
            try:
                return call(self.conn(e))
            except grpc.RpcError as exc:
                errors.append(f"{e}: {describe(exc)}")
        raise CtlError("; ".join(errors))

    # -- reading -------------------------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        resp = self.first(
            lambda c: c.cluster.MemberList(
                pb.MemberListRequest(linearizable=False), timeout=self.timeout
            )
        )
        return [MemberInfo(m.ID, m.name, tuple(m.clientURLs), m.isLearner) for m in resp.members]

    def status(self, endpoint: str) -> StatusInfo:
        r = self.conn(endpoint).maintenance.Status(pb.StatusRequest(), timeout=self.timeout)
        return StatusInfo(
            id=r.header.member_id,
            leader=r.leader,
            term=r.raftTerm,
            commit=r.raftIndex,
            applied=r.raftAppliedIndex,
            version=r.version,
            is_learner=r.isLearner,
            errors=tuple(r.errors),
        )

    def survey(self) -> tuple[list[MemberInfo], dict[int, StatusInfo | str], dict[int, str]]:
        """The member list, each member's Status (or its error), and the endpoint that answered.

        The given endpoints are asked first (they are reachable from here by definition, e.g.
        pod IPs); members not covered are asked at their advertised client URLs.
        """
        members = self.members()
        statuses: dict[int, StatusInfo | str] = {}
        where: dict[int, str] = {}
        with ThreadPoolExecutor(max_workers=8) as pool:
            for e, got in zip(
                self.endpoints, pool.map(self._try_status, self.endpoints), strict=True
            ):
                if isinstance(got, StatusInfo):
                    statuses[got.id] = got
                    where[got.id] = e
            missing = [m for m in members if m.id not in statuses and m.client_urls]
            urls = [m.client_urls[0] for m in missing]
            for m, url, got in zip(missing, urls, pool.map(self._try_status, urls), strict=True):
                statuses[m.id] = got
                where[m.id] = normalize(url)
        for m in members:
            statuses.setdefault(m.id, "not reachable at any endpoint")
        return members, statuses, where

    def _try_status(self, endpoint: str) -> StatusInfo | str:
        try:
            return self.status(endpoint)
        except grpc.RpcError as exc:
            return describe(exc)

    def leader_endpoint(self) -> str:
        _, statuses, where = self.survey()
        for mid, s in statuses.items():
            if isinstance(s, StatusInfo) and s.leader == mid and mid in where:
                return where[mid]
        raise CtlError("no member reports itself as leader")

    # -- changing ------------------------------------------------------------------------------

    def member_add(self, peer_urls: list[str], learner: bool) -> pb.MemberAddResponse:
        req = pb.MemberAddRequest(peerURLs=peer_urls, isLearner=learner)
        resp: pb.MemberAddResponse = self.first(
            lambda c: c.cluster.MemberAdd(req, timeout=self.timeout)
        )
        return resp

    def member_promote(self, member_id: int) -> None:
        req = pb.MemberPromoteRequest(ID=member_id)
        self.first(lambda c: c.cluster.MemberPromote(req, timeout=self.timeout))

    def member_remove(self, member_id: int) -> None:
        req = pb.MemberRemoveRequest(ID=member_id)
        self.first(lambda c: c.cluster.MemberRemove(req, timeout=self.timeout))

    def move_leader(self, target: int) -> None:
        leader = self.leader_endpoint()
        req = pb.MoveLeaderRequest(targetID=target)
        try:
            self.conn(leader).maintenance.MoveLeader(req, timeout=self.timeout * 3)
        except grpc.RpcError as exc:
            raise CtlError(describe(exc)) from exc

    def defragment(self, endpoint: str) -> None:
        try:
            self.conn(endpoint).maintenance.Defragment(
                pb.DefragmentRequest(), timeout=self.timeout * 20
            )
        except grpc.RpcError as exc:
            raise CtlError(f"{endpoint}: {describe(exc)}") from exc

    def snapshot(self) -> Iterator[tuple[bytes, int]]:
        """The backup stream of the first endpoint that answers: (chunk, bytes remaining)."""
        errors = []
        for e in self.endpoints:
            stream = self.conn(e).maintenance.Snapshot(pb.SnapshotRequest(), timeout=600)
            try:
                first = next(stream)
            except grpc.RpcError as exc:
                errors.append(f"{e}: {describe(exc)}")
                continue
            yield first.blob, first.remaining_bytes
            try:
                for r in stream:
                    yield r.blob, r.remaining_bytes
            except grpc.RpcError as exc:
                raise CtlError(f"{e}: snapshot stream broke: {describe(exc)}") from exc
            return
        raise CtlError("; ".join(errors))
