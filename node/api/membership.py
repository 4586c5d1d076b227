"""Flotilla's Membership service: any target set of voters and learners in one transition.

etcd's Cluster service changes one member per call; scaling 3 -> 5 through it means two
separate changes of the voter set. ``SetVoters`` asks the leader's core for the whole target
at once, which the core turns into a single joint-consensus transition, and streams its
progress so a caller (the operator) can tell "in the joint phase" from "done".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from .. import memberops
from ..raft.core import RaftCore
from ..server import NodeUnavailable, RaftNode
from .cluster import healthy_members, learner_lag
from .etcdpb import flotilla_pb2 as fpb
from .etcdpb import flotilla_pb2_grpc


class MembershipService(flotilla_pb2_grpc.MembershipServicer):  # type: ignore[misc]
    def __init__(self, node: RaftNode) -> None:
        self.node = node

    async def SetVoters(
        self, request: fpb.SetVotersRequest, context: Any
    ) -> AsyncIterator[fpb.SetVotersProgress]:
        node = self.node
        if not node.is_leader:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"etcdserver: not leader (the leader is {node.leader_id:x})",
            )
        voters, learners = set(request.voters), set(request.learners)

        def start(core: RaftCore) -> tuple[int, bool]:
            healthy = healthy_members(core)
            promoted = voters - core.conf.all_voters()
            for mid in promoted & core.conf.learners:
                lag = learner_lag(core, mid)
                memberops.promote(core.conf, node.members, mid, lag, core.last_index())
            change = memberops.set_voters(
                core.conf, node.members, voters, learners, healthy, request.force
            )
            joint = change.voters != core.conf.voters
            index = core.propose_conf_change(change.voters, change.learners, change.context)
            return index, joint

        try:
            started = await node.call_core(start)
            assert isinstance(started, tuple)
            index, joint = started
            await node.wait_applied(index)
            if joint:
                # C_old,new is applied (so committed); the leader has proposed C_new.
                yield self._progress("joint", index)
                await node.wait_config_settled()
            yield self._progress("done", node.core.conf_index)
        except memberops.MemberOpError as exc:
            # Our own RPC is free to say more than etcd's message, e.g. a learner's lag.
            text = f"{exc.message} ({exc.detail})" if exc.detail else exc.message
            await context.abort(exc.code, text)
        except NodeUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:  # the core's refusals: change in progress, not leader
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcdserver: {exc}")

    def _progress(self, phase: str, index: int) -> fpb.SetVotersProgress:
        conf = self.node.core.conf
        return fpb.SetVotersProgress(
            phase=phase,
            index=index,
            voters=sorted(conf.voters),
            outgoing=sorted(conf.outgoing),
            learners=sorted(conf.learners),
        )


def add_to_server(server: Any, service: MembershipService) -> None:
    flotilla_pb2_grpc.add_MembershipServicer_to_server(service, server)
