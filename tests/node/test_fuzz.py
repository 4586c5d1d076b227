"""Hostile input: every client RPC fuzzed with hypothesis against one real 3-member cluster.

Two kinds of request reach the members through raw gRPC channels with identity serializers,
so nothing on the client side filters them: messages built field by field from the protobuf
descriptors (huge and empty keys and values, negative numbers, unknown enum values, nested
transactions), and plain random bytes as the serialized request. Whatever comes in, a member
must answer with a status etcd would give (never an unhandled exception, which grpc reports
as UNKNOWN "Unexpected <class ...>"), must not crash or stall, and the members must not
diverge: afterwards they agree on HashKV at the same revision.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flotilla.node.api.etcdpb import rpc_pb2 as pb
from flotilla.node.api.etcdpb import v3election_pb2, v3lock_pb2

from .procs import ProcessCluster, wait_for

SERVICES = [
    pb.DESCRIPTOR.services_by_name[n] for n in ("KV", "Watch", "Lease", "Cluster", "Maintenance")
] + [
    v3lock_pb2.DESCRIPTOR.services_by_name["Lock"],
    v3election_pb2.DESCRIPTOR.services_by_name["Election"],
]
METHODS = [m for s in SERVICES for m in s.methods]
BLOCKING = {"Lock", "Campaign", "Observe", "Watch", "LeaseKeepAlive", "Snapshot"}
"""Calls that may rightly wait for something that never happens (a lock held, a leader key):
their deadline passing is not a stall."""

CONCURRENCY_SERVICES = {"v3lockpb.Lock", "v3electionpb.Election"}
"""etcd's Lock and Election servers answer every error as UNKNOWN with the error's text."""

SETTINGS = settings(
    max_examples=int(os.environ.get("FLOTILLA_FUZZ_EXAMPLES", "20")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

MAX_SCALAR_BYTES = 2 << 20
"""Past etcd's 1.5 MiB request limit and the server's 2 MiB receive limit together."""


# == the cluster, once for the module ==========================================================


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    c = ProcessCluster(Path(tmp_path_factory.mktemp("fuzz")), 3)
    c.start()
    try:
        c.wait_healthy()
        yield c
    finally:
        crashed = [m.name for m in c.members if not m.alive]
        c.stop()
        if crashed:
            print(c.logs(), file=sys.stderr)


@pytest.fixture(scope="module")
def channels(cluster: ProcessCluster) -> Iterator[list[grpc.Channel]]:
    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    chans = [grpc.insecure_channel(m.endpoint, options=opts) for m in cluster.members]
    yield chans
    for ch in chans:
        ch.close()


# == requests from descriptors =================================================================

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _blob() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=16),
        st.sampled_from([b"", b"\x00", b"\xff" * 8, b"a", b"fuzz/", b"fuzz/a"]),
        st.integers(1, 4).map(lambda n: b"v" * (MAX_SCALAR_BYTES * n // 4 + 1)),
    )


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    if f.type in _INT_RANGES:
        lo, hi = _INT_RANGES[f.type]
        return st.one_of(st.integers(lo, hi), st.sampled_from([0, 1, -1 if lo else 2, lo, hi]))
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 40)  # proto3 enums are open: values etcd never defined too
    if f.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=20), st.just("http://127.0.0.1:1"), st.just(""))
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _blob()
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True)
    raise AssertionError(f"no strategy for field type {f.type} of {f.full_name}")


def _repeated(f: FieldDescriptor) -> bool:
    flag = getattr(f, "is_repeated", None)  # newer protobuf; ``label`` before it
    return bool(flag) if flag is not None else f.label == FieldDescriptor.LABEL_REPEATED


def message_of(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    cls = message_factory.GetMessageClass(desc)

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        msg = cls()
        for f in desc.fields:
            if not draw(st.booleans()):
                continue
            is_msg = f.type == FieldDescriptor.TYPE_MESSAGE
            if is_msg and depth >= 4:
                continue
            inner = message_of(f.message_type, depth + 1) if is_msg else _scalar(f)
            if _repeated(f):
                getattr(msg, f.name).extend(draw(st.lists(inner, max_size=3)))
            elif is_msg:
                getattr(msg, f.name).CopyFrom(draw(inner))
            else:
                setattr(msg, f.name, draw(inner))
        return msg

    return build()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _embedded(field_number: int, body: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(body)) + body


def nested_txn(depth: int) -> bytes:
    """A Txn nested ``depth`` times, serialized by hand: the protobuf runtime refuses to build
    messages as deep as a hostile client can write them."""
    success = pb.TxnRequest.DESCRIPTOR.fields_by_name["success"].number
    request_txn = pb.RequestOp.DESCRIPTOR.fields_by_name["request_txn"].number
    put = pb.RequestOp(request_put=pb.PutRequest(key=b"deep", value=b"x"))
    txn = _embedded(success, put.SerializeToString())
    for _ in range(depth):
        txn = _embedded(success, _embedded(request_txn, txn))
    return txn


# == calling and judging =======================================================================


def _path(m: MethodDescriptor) -> str:
    return f"/{m.containing_service.full_name}/{m.name}"


def call_raw(channel: grpc.Channel, m: MethodDescriptor, data: bytes) -> tuple[str, str]:
    """Send ``data`` as the serialized request; the status code's name and details."""
    identity = {"request_serializer": None, "response_deserializer": None}
    timeout = 2.0 if m.name in BLOCKING else 10.0
    try:
        if m.client_streaming:
            call = channel.stream_stream(_path(m), **identity)
            responses = call(iter([data]), timeout=timeout)
            next(responses, None)
            responses.cancel()
        elif m.server_streaming:
            call = channel.unary_stream(_path(m), **identity)
            responses = call(data, timeout=timeout)
            next(responses, None)
            responses.cancel()
        else:
            channel.unary_unary(_path(m), **identity)(data, timeout=timeout)
    except grpc.RpcError as err:
        return err.code().name, err.details() or ""
    return "OK", ""


def judge(m: MethodDescriptor, code: str, details: str) -> str | None:
    """Why this answer is not one etcd would give, or None if it is fine."""
    if code == "UNIMPLEMENTED":
        return None  # a method Flotilla does not serve (Hash, Downgrade) says so
    if code == "CANCELLED":
        return None  # we cancelled a stream after its first response
    if code == "DEADLINE_EXCEEDED":
        return None if m.name in BLOCKING else "deadline exceeded: the member stalled"
    if "Unexpected <class" in details or "Traceback" in details or "Exception calling" in details:
        return "an unhandled exception"
    if code == "UNKNOWN" and m.containing_service.full_name not in CONCURRENCY_SERVICES:
        return "UNKNOWN status"
    if code == "INTERNAL" and "error unmarshalling request" not in details:
        return "INTERNAL status"  # only an undecodable request may get it (as in etcd)
    return None


def exercise(channel: grpc.Channel, m: MethodDescriptor, data: bytes) -> None:
    code, details = call_raw(channel, m, data)
    problem = judge(m, code, details)
    assert problem is None, f"{_path(m)}: {problem}: {code} {details!r} for {data[:200]!r}"


def _safe(m: MethodDescriptor, msg: Any) -> bool:
    """Leave out the few valid requests that would break the cluster on purpose rather than
    test its input handling: raising an alarm, adding or removing members."""
    name = m.name
    if name == "Alarm":
        return bool(msg.action != pb.AlarmRequest.ACTIVATE)
    return name not in ("MemberAdd", "MemberRemove", "MemberPromote", "MemberUpdate")


# == the tests =================================================================================


@pytest.mark.parametrize("method", METHODS, ids=_path)
def test_structured_requests_get_etcd_answers(
    method: MethodDescriptor, channels: list[grpc.Channel]
) -> None:
    @SETTINGS
    @given(msg=message_of(method.input_type), which=st.integers(0, len(channels) - 1))
    def body(msg: Any, which: int) -> None:
        if _safe(method, msg):
            exercise(channels[which], method, msg.SerializeToString())

    body()


@pytest.mark.parametrize("method", METHODS, ids=_path)
def test_random_bytes_get_etcd_answers(
    method: MethodDescriptor, channels: list[grpc.Channel]
) -> None:
    @SETTINGS
    @given(data=st.binary(max_size=300), which=st.integers(0, len(channels) - 1))
    def body(data: bytes, which: int) -> None:
        exercise(channels[which], method, data)

    body()


def test_deeply_nested_transactions_are_refused(channels: list[grpc.Channel]) -> None:
    txn = next(m for m in METHODS if m.name == "Txn")
    # Around the decoder's depth limit: a request one level short of it must not become a log
    # entry that its envelope pushes past the limit when the members apply it.
    for depth in (2, 30, *range(44, 52), 60, 1000):
        exercise(channels[depth % len(channels)], txn, nested_txn(depth))


def test_members_are_alive_and_agree_afterwards(
    cluster: ProcessCluster, channels: list[grpc.Channel]
) -> None:
    """Runs last in the module (pytest keeps file order)."""
    assert all(m.alive for m in cluster.members), "a member died"
    leader = cluster.wait_healthy()
    kv = channels[cluster.members.index(leader)]
    maint = [_stub(ch, "Maintenance") for ch in channels]
    # Disarm anything raised on the way, so the closing write goes through.
    alarms = maint[0]["Alarm"](pb.AlarmRequest(action=pb.AlarmRequest.GET), timeout=5)
    for a in alarms.alarms:
        req = pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE, memberID=a.memberID, alarm=a.alarm)
        maint[0]["Alarm"](req, timeout=5)
    put = _stub(kv, "KV")["Put"](pb.PutRequest(key=b"fuzz/done", value=b"1"), timeout=10)
    rev = put.header.revision

    def applied(i: int) -> bool:
        r = _stub(channels[i], "KV")["Range"](
            pb.RangeRequest(key=b"fuzz/done", serializable=True), timeout=5
        )
        return bool(r.header.revision >= rev)

    for i, m in enumerate(cluster.members):
        wait_for(f"{m.name} to apply revision {rev}", lambda i=i: applied(i))  # type: ignore[misc]
    hashes = {
        m.name: maint[i]["HashKV"](pb.HashKVRequest(revision=rev), timeout=10).hash
        for i, m in enumerate(cluster.members)
    }
    assert len(set(hashes.values())) == 1, f"members diverged at revision {rev}: {hashes}"


def _stub(channel: grpc.Channel, service: str) -> dict[str, Any]:
    desc = pb.DESCRIPTOR.services_by_name[service]
    return {
        m.name: channel.unary_unary(
            _path(m),
            request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=message_factory.GetMessageClass(m.output_type).FromString,
        )
        for m in desc.methods
        if not m.client_streaming and not m.server_streaming
    }
