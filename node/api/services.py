"""Registration of the client-facing etcd services on a grpc.aio server."""

from __future__ import annotations

from typing import Any

from flotilla.node.api import watch
from flotilla.node.api.election import ElectionService
from flotilla.node.api.etcdpb import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc
from flotilla.node.api.handle import NodeHandle
from flotilla.node.api.kv import KVService
from flotilla.node.api.lease import LeaseService
from flotilla.node.api.lock import LockService


def add_services(server: Any, handle: NodeHandle) -> None:
    """Serve etcd's KV, Watch, Lease, Lock and Election on ``server`` for ``handle``'s member."""
    rpc_pb2_grpc.add_KVServicer_to_server(KVService(handle), server)
    watch.add_to_server(server, handle)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(handle), server)
    v3lock_pb2_grpc.add_LockServicer_to_server(LockService(handle), server)
    v3election_pb2_grpc.add_ElectionServicer_to_server(ElectionService(handle), server)
