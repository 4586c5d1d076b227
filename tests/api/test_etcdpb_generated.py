"""The committed etcd protobuf modules are current and expose etcd's exact gRPC names."""

from __future__ import annotations

from pathlib import Path

import pytest

from flotilla.node.api import gen_protos
from flotilla.node.api.etcdpb import (
    auth_pb2,
    kv_pb2,
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)


def test_committed_code_matches_regeneration(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    written = gen_protos.generate(tmp_path)
    assert sorted(p.name for p in written) == gen_protos.generated_names()
    committed = {p.name for p in gen_protos.OUT_DIR.iterdir() if p.is_file()}
    assert set(gen_protos.generated_names()) <= committed
    stale = committed - set(gen_protos.generated_names()) - {"__init__.py"}
    assert not stale, f"files not produced by the generator: {sorted(stale)}"
    for path in written:
        expected = path.read_text(encoding="utf-8")
        actual = (gen_protos.OUT_DIR / path.name).read_text(encoding="utf-8")
        hint = "run python -m flotilla.node.api.gen_protos"
        assert actual == expected, f"{path.name} is stale: {hint}"


def _method_paths() -> set[str]:
    paths = set()
    for module in (rpc_pb2, v3lock_pb2, v3election_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                paths.add(f"{service.full_name}/{method.name}")
    return paths


@pytest.mark.parametrize(
    "path",
    [
        "etcdserverpb.KV/Range",
        "etcdserverpb.KV/Put",
        "etcdserverpb.KV/DeleteRange",
        "etcdserverpb.KV/Txn",
        "etcdserverpb.KV/Compact",
        "etcdserverpb.Watch/Watch",
        "etcdserverpb.Lease/LeaseGrant",
        "etcdserverpb.Lease/LeaseRevoke",
        "etcdserverpb.Lease/LeaseKeepAlive",
        "etcdserverpb.Lease/LeaseTimeToLive",
        "etcdserverpb.Lease/LeaseLeases",
        "etcdserverpb.Cluster/MemberAdd",
        "etcdserverpb.Cluster/MemberList",
        "etcdserverpb.Cluster/MemberPromote",
        "etcdserverpb.Maintenance/Status",
        "etcdserverpb.Maintenance/HashKV",
        "etcdserverpb.Maintenance/Snapshot",
        "etcdserverpb.Maintenance/MoveLeader",
        "etcdserverpb.Maintenance/Downgrade",
        "etcdserverpb.Auth/Authenticate",
        "etcdserverpb.Auth/RoleRevokePermission",
        "v3lockpb.Lock/Lock",
        "v3lockpb.Lock/Unlock",
        "v3electionpb.Election/Campaign",
        "v3electionpb.Election/Proclaim",
        "v3electionpb.Election/Leader",
        "v3electionpb.Election/Observe",
        "v3electionpb.Election/Resign",
    ],
)
def test_method_full_names(path: str) -> None:
    assert path in _method_paths()


def test_grpc_stubs_use_etcd_paths() -> None:
    """The generated servicer glue registers handlers under the exact paths clients call."""
    for module, marker in (
        (rpc_pb2_grpc, "/etcdserverpb.KV/Range"),
        (v3lock_pb2_grpc, "/v3lockpb.Lock/Lock"),
        (v3election_pb2_grpc, "/v3electionpb.Election/Campaign"),
    ):
        assert module.__file__ is not None
        assert marker in Path(module.__file__).read_text(encoding="utf-8")


def test_streaming_shapes() -> None:
    methods = {
        f"{s.full_name}/{m.name}": m
        for mod in (rpc_pb2, v3election_pb2)
        for s in mod.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    }
    watch = methods["etcdserverpb.Watch/Watch"]
    assert watch.client_streaming and watch.server_streaming
    keepalive = methods["etcdserverpb.Lease/LeaseKeepAlive"]
    assert keepalive.client_streaming and keepalive.server_streaming
    snap = methods["etcdserverpb.Maintenance/Snapshot"]
    assert not snap.client_streaming and snap.server_streaming
    observe = methods["v3electionpb.Election/Observe"]
    assert not observe.client_streaming and observe.server_streaming


def test_package_names_and_field_numbers() -> None:
    """Spot-check numbers that etcd clients depend on, including the non-contiguous ones."""
    assert kv_pb2.DESCRIPTOR.package == "mvccpb"
    assert auth_pb2.DESCRIPTOR.package == "authpb"
    assert rpc_pb2.DESCRIPTOR.package == "etcdserverpb"
    assert v3lock_pb2.DESCRIPTOR.package == "v3lockpb"
    assert v3election_pb2.DESCRIPTOR.package == "v3electionpb"
    fields = rpc_pb2.Compare.DESCRIPTOR.fields_by_name
    assert fields["range_end"].number == 64
    assert fields["lease"].number == 8
    assert rpc_pb2.WatchResponse.DESCRIPTOR.fields_by_name["events"].number == 11
    assert rpc_pb2.RangeRequest.DESCRIPTOR.fields_by_name["max_create_revision"].number == 13
    assert rpc_pb2.StatusResponse.DESCRIPTOR.fields_by_name["downgradeInfo"].number == 13
    assert rpc_pb2.HashKVResponse.DESCRIPTOR.fields_by_name["hash_revision"].number == 4
    assert kv_pb2.KeyValue.DESCRIPTOR.fields_by_name["lease"].number == 6


def test_wire_round_trip() -> None:
    """A known etcd wire encoding decodes to the expected request."""
    # PutRequest{key: "foo", value: "bar", prev_kv: true}, as encoded by etcd's Go client.
    wire = b"\n\x03foo\x12\x03bar \x01"
    req = rpc_pb2.PutRequest.FromString(wire)
    assert (req.key, req.value, req.prev_kv) == (b"foo", b"bar", True)
    assert req.SerializeToString() == wire
