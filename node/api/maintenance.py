"""etcd's Maintenance service: status, hash, leadership move, defragment, snapshot, alarms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .. import __version__
from ..kv.errors import EtcdError
from ..raft.core import RaftCore
from ..server import NodeUnavailable, RaftNode
from .etcdpb import rpc_pb2 as pb
from .etcdpb import rpc_pb2_grpc
from .handle import abort

Header = Callable[[], pb.ResponseHeader]


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):  # type: ignore[misc]
    def __init__(
        self,
        node: RaftNode,
        header: Header,
        db_size: Callable[[], int],
        hash_kv: Callable[[int], Awaitable[pb.HashKVResponse]],
        snapshot: Callable[[], AsyncIterator[bytes]],
        defragment: Callable[[], Awaitable[None]],
    ) -> None:
        self.node = node
        self.header = header
        self.db_size = db_size
        self.hash_kv = hash_kv
        self.snapshot = snapshot
        self.defragment = defragment

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        core = self.node.core
        size = self.db_size()
        return pb.StatusResponse(
            header=self.header(),
            version=__version__,
            dbSize=size,
            dbSizeInUse=size,
            leader=core.lead,
            raftIndex=core.commit,
            raftTerm=core.term,
            raftAppliedIndex=core.applied,
            isLearner=core.id in core.conf.learners and not core.conf.is_voter(core.id),
            errors=[
                f"memberID:{m} alarm:{pb.AlarmType.Name(a)}" for m, a in sorted(self.node.alarms)
            ],
        )

    async def HashKV(self, request: pb.HashKVRequest, context: Any) -> pb.HashKVResponse:
        try:
            resp = await self.hash_kv(request.revision)
        except EtcdError as err:  # a future or compacted revision
            await abort(context, err)
        resp.header.CopyFrom(self.header())
        return resp

    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: Any
    ) -> pb.MoveLeaderResponse:
        node = self.node
        if not node.is_leader:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
        target = request.targetID
        if target not in node.members or not node.core.conf.is_voter(target):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee"
            )

        def transfer(core: RaftCore) -> None:
            core.transfer_leader(target)

        await node.call_core(transfer)
        try:
            await node.wait_for_leader(target)
        except NodeUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.MoveLeaderResponse(header=self.header())

    async def Defragment(
        self, request: pb.DefragmentRequest, context: Any
    ) -> pb.DefragmentResponse:
        await self.defragment()
        return pb.DefragmentResponse(header=self.header())

    async def Alarm(self, request: pb.AlarmRequest, context: Any) -> pb.AlarmResponse:
        A = pb.AlarmRequest.AlarmAction
        node = self.node
        target = (request.memberID, int(request.alarm))
        was_active = target in node.alarms
        try:
            if request.action == A.ACTIVATE:
                await node.set_alarm("activate", request.memberID, request.alarm)
            elif request.action == A.DEACTIVATE:
                await node.set_alarm("deactivate", request.memberID, request.alarm)
            else:
                # etcd answers a GET through the log too: a member that has not yet applied
                # an alarm the cluster raised must not report it absent.
                await node.read_barrier()
        except NodeUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        alarms = [
            pb.AlarmMember(memberID=m, alarm=a)  # type: ignore[arg-type]
            for m, a in sorted(node.alarms)
            if request.action == A.GET or (m, a) == (request.memberID, request.alarm)
        ]
        if request.action == A.DEACTIVATE:
            alarms = [pb.AlarmMember(memberID=target[0], alarm=target[1])] if was_active else []  # type: ignore[arg-type]
        return pb.AlarmResponse(header=self.header(), alarms=alarms)

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: Any
    ) -> AsyncIterator[pb.SnapshotResponse]:
        chunks = [c async for c in self.snapshot()]
        remaining = sum(len(c) for c in chunks)
        for chunk in chunks:
            remaining -= len(chunk)
            yield pb.SnapshotResponse(
                header=self.header(), remaining_bytes=remaining, blob=chunk, version=__version__
            )


def add_to_server(server: Any, service: MaintenanceService) -> None:
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(service, server)
