"""What the client-facing services need from the member that runs them.

The services are written against :class:`NodeHandle`, not the driver itself: the driver
(Raft core, storage, transport) implements it, and tests drive the services with a
single-member double. This module also holds the few helpers every service uses to answer
as etcd does: response headers and etcd's error statuses.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn, Protocol

from google.protobuf.message import Message

from flotilla.node.api.etcdpb import rpc_pb2
from flotilla.node.kv.errors import EtcdError, RequestTooLargeError
from flotilla.node.kv.lease import Lessor
from flotilla.node.kv.store import MvccStore
from flotilla.node.kv.watch import WatchHub

MAX_REQUEST_BYTES: Final = 3 * 512 * 1024
"""etcd's default ``--max-request-bytes`` (1.5 MiB): the largest request that is proposed."""

GRPC_OVERHEAD_BYTES: Final = 512 * 1024
"""Slack etcd adds to the gRPC receive limit, so an oversized request still arrives and gets
etcd's own "request is too large" answer instead of a transport error."""

GRPC_SERVER_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES),
    ("grpc.max_send_message_length", 2**31 - 1),
]
"""Channel options for the client-facing gRPC server."""


class NodeHandle(Protocol):
    """The member as the services see it."""

    store: MvccStore
    lessor: Lessor
    watch_hub: WatchHub

    def header(self) -> rpc_pb2.ResponseHeader:
        """cluster_id, member_id and raft_term; the services set the revision."""
        ...

    async def propose(self, request: Any) -> object:
        """Replicate ``request``, wait until this member applied it, return the result.

        The result is the Applier's: a response message, or an EtcdError (which may also be
        raised, e.g. "etcdserver: no leader", "etcdserver: request timed out").
        """
        ...

    async def read_barrier(self) -> None:
        """Return once the applied state covers everything committed before the call."""
        ...

    async def lease_renew(self, lease_id: int) -> int:
        """Renew a lease on the leader (forwarding if need be); return its TTL."""
        ...

    async def lease_remaining(self, lease_id: int) -> int | None:
        """Whole seconds the leader's clock gives the lease (asking the leader if need be),
        -1 if the leader knows no such lease; None when only the granted TTL is known here
        (a leader of an earlier version)."""
        ...


def fill_header(header: rpc_pb2.ResponseHeader, handle: NodeHandle, revision: int = 0) -> None:
    """Complete a response header: member identity, term, and revision if not yet set."""
    base = handle.header()
    header.cluster_id = base.cluster_id
    header.member_id = base.member_id
    header.raft_term = base.raft_term
    if revision:
        header.revision = revision
    elif not header.revision:
        header.revision = handle.store.revision


def check_size(request: Message) -> None:
    """etcd refuses to propose a request larger than the limit."""
    if request.ByteSize() > MAX_REQUEST_BYTES:
        raise RequestTooLargeError()


async def propose(handle: NodeHandle, request: Any) -> Any:
    """Propose and return the response, raising the EtcdError the apply produced."""
    result = await handle.propose(request)
    if isinstance(result, EtcdError):
        raise result
    return result


async def abort(context: Any, err: EtcdError) -> NoReturn:
    """End the RPC with etcd's status code and exact message for ``err``."""
    await context.abort(err.code, err.message)
    raise AssertionError("context.abort returned")  # pragma: no cover
