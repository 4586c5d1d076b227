"""etcd's Cluster service: member list and membership changes, answered as etcd answers.

Changes are decided in ``memberops`` and carried out by the leader's Raft core; a member that
is not the leader forwards the request to the leader's client URL, so any endpoint works.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from .. import memberops
from ..members import Member, member_id_of
from ..raft.core import RaftCore
from ..server import NodeUnavailable, RaftNode
from .etcdpb import rpc_pb2 as pb
from .etcdpb import rpc_pb2_grpc

Header = Callable[[], pb.ResponseHeader]


def healthy_members(core: RaftCore) -> set[int]:
    """Members the leader heard from within the last election timeout, and itself."""
    return {core.id} | {mid for mid, pr in core.prs.items() if pr.recent_active}


def learner_lag(core: RaftCore, member_id: int) -> int | None:
    """How far a member is behind the leader's log; None if it never answered (match 0),
    which is not "in sync" however short the log is."""
    pr = core.prs.get(member_id)
    return None if pr is None or pr.match == 0 else core.last_index() - pr.match


def member_pb(m: Member) -> pb.Member:
    return pb.Member(
        ID=m.id,
        name=m.name,
        peerURLs=list(m.peer_urls),
        clientURLs=list(m.client_urls),
        isLearner=m.is_learner,
    )


class ClusterService(rpc_pb2_grpc.ClusterServicer):  # type: ignore[misc]
    def __init__(
        self,
        node: RaftNode,
        header: Header,
        token: str,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``credentials``: what this member presents to the leader's https client URL when it
        forwards a call (its own client certificate and trusted CA)."""
        self._credentials = credentials
        self.node = node
        self.header = header
        self.token = token

    def _members(self) -> list[pb.Member]:
        return [member_pb(m) for m in sorted(self.node.members.values(), key=lambda m: m.id)]

    async def MemberList(
        self, request: pb.MemberListRequest, context: Any
    ) -> pb.MemberListResponse:
        if request.linearizable:
            await self._barrier(context)
        return pb.MemberListResponse(header=self.header(), members=self._members())

    async def MemberAdd(self, request: pb.MemberAddRequest, context: Any) -> pb.MemberAddResponse:
        await _check_urls(context, list(request.peerURLs))
        forwarded = await self._forward(context, "MemberAdd", request, pb.MemberAddResponse)
        if forwarded is not None:
            return forwarded  # type: ignore[no-any-return]
        new = Member(
            member_id_of(request.peerURLs, self.token, time.time_ns()),
            "",
            tuple(sorted(request.peerURLs)),
            (),
            request.isLearner,
        )
        await self._change(
            context,
            lambda core: memberops.add(core.conf, self.node.members, new, healthy_members(core)),
        )
        return pb.MemberAddResponse(
            header=self.header(), member=member_pb(new), members=self._members()
        )

    async def MemberRemove(
        self, request: pb.MemberRemoveRequest, context: Any
    ) -> pb.MemberRemoveResponse:
        forwarded = await self._forward(context, "MemberRemove", request, pb.MemberRemoveResponse)
        if forwarded is not None:
            return forwarded  # type: ignore[no-any-return]
        await self._change(
            context,
            lambda core: memberops.remove(
                core.conf, self.node.members, request.ID, healthy_members(core), force=False
            ),
        )
        return pb.MemberRemoveResponse(header=self.header(), members=self._members())

    async def MemberPromote(
        self, request: pb.MemberPromoteRequest, context: Any
    ) -> pb.MemberPromoteResponse:
        forwarded = await self._forward(context, "MemberPromote", request, pb.MemberPromoteResponse)
        if forwarded is not None:
            return forwarded  # type: ignore[no-any-return]

        def plan(core: RaftCore) -> memberops.Change:
            lag = learner_lag(core, request.ID)
            return memberops.promote(
                core.conf, self.node.members, request.ID, lag, core.last_index()
            )

        await self._change(context, plan)
        return pb.MemberPromoteResponse(header=self.header(), members=self._members())

    async def MemberUpdate(
        self, request: pb.MemberUpdateRequest, context: Any
    ) -> pb.MemberUpdateResponse:
        await _check_urls(context, list(request.peerURLs))
        forwarded = await self._forward(context, "MemberUpdate", request, pb.MemberUpdateResponse)
        if forwarded is not None:
            return forwarded  # type: ignore[no-any-return]
        node = self.node
        if request.ID not in node.members:
            code, message = memberops.MEMBER_NOT_FOUND
            await context.abort(code, message)
        urls = set(request.peerURLs)
        taken = {u for m in node.members.values() if m.id != request.ID for u in m.peer_urls}
        if urls & taken:
            code, message = memberops.PEER_URL_EXISTS
            await context.abort(code, message)
        try:
            await node.update_member_urls(request.ID, sorted(urls))
        except NodeUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.MemberUpdateResponse(header=self.header(), members=self._members())

    # -- helpers ---------------------------------------------------------------------------

    async def _barrier(self, context: Any) -> None:
        try:
            await self.node.read_barrier()
        except NodeUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _change(self, context: Any, plan: Callable[[RaftCore], memberops.Change]) -> None:
        def start(core: RaftCore) -> int:
            change = plan(core)
            return core.propose_conf_change(change.voters, change.learners, change.context)

        try:
            index = await self.node.call_core(start)
            assert isinstance(index, int)
            await self.node.wait_applied(index)
            # Wait for the joint transition to complete (the leave entry follows).
            await self.node.wait_config_settled()
        except memberops.MemberOpError as exc:
            await context.abort(exc.code, exc.message)
        except NodeUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:  # the core's refusals: not leader, change in progress
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcdserver: {exc}")

    async def _leader_member(self, wait: float = 3.0) -> Member | None:
        """The leader's member record once its client URLs are known here.

        Right after start-up a member may know who leads before the leader's published
        client URLs have been applied locally: wait for them briefly.
        """
        node = self.node
        deadline = time.monotonic() + wait
        while True:
            leader = node.members.get(node.leader_id)
            if leader is not None and leader.client_urls:
                return leader
            if time.monotonic() >= deadline:
                return None
            try:
                await node.wait_applied(node.core.applied + 1, deadline - time.monotonic())
            except NodeUnavailable:
                return None

    async def _forward(self, context: Any, method: str, request: Any, resp_type: Any) -> Any:
        node = self.node
        if node.is_leader:
            return None
        leader = await self._leader_member()
        if leader is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        assert leader is not None
        scheme, _, target = leader.client_urls[0].rpartition("://")
        if scheme == "https":
            creds = self._credentials or grpc.ssl_channel_credentials()
            channel = grpc.aio.secure_channel(target, creds)
        else:
            channel = grpc.aio.insecure_channel(target)
        async with channel:
            call = channel.unary_unary(
                f"/etcdserverpb.Cluster/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=resp_type.FromString,
            )
            try:
                return await call(request, timeout=10)
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), err.details() or "")


async def _check_urls(context: Any, urls: list[str]) -> None:
    try:
        memberops.check_peer_urls(urls)
    except memberops.MemberOpError as exc:
        await context.abort(exc.code, exc.message)


def add_to_server(server: Any, service: ClusterService) -> None:
    rpc_pb2_grpc.add_ClusterServicer_to_server(service, server)
