"""Fixtures for the service tests: a served single member and sync etcd stubs to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from member import Served

from flotilla.node.api.etcdpb import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "member")
    yield s
    s.close()


@pytest.fixture
def channel(served: Served) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(served.endpoint)
    yield ch
    ch.close()


@pytest.fixture
def kv(channel: grpc.Channel) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(channel)


@pytest.fixture
def lease(channel: grpc.Channel) -> rpc_pb2_grpc.LeaseStub:
    return rpc_pb2_grpc.LeaseStub(channel)


@pytest.fixture
def watch(channel: grpc.Channel) -> rpc_pb2_grpc.WatchStub:
    return rpc_pb2_grpc.WatchStub(channel)


@pytest.fixture
def lock(channel: grpc.Channel) -> v3lock_pb2_grpc.LockStub:
    return v3lock_pb2_grpc.LockStub(channel)


@pytest.fixture
def election(channel: grpc.Channel) -> v3election_pb2_grpc.ElectionStub:
    return v3election_pb2_grpc.ElectionStub(channel)
