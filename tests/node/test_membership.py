"""Membership through etcd's Cluster API on real processes: join, promote, remove, refuse."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from .procs import Proc, ProcessCluster, etcdctl, etcdctl_json, free_ports, wait_for

pytestmark = pytest.mark.node


@pytest.fixture
def cluster(make_cluster: Callable[..., ProcessCluster]) -> ProcessCluster:
    return make_cluster(3, extra_flags=["--snapshot-count=100"])


def add_member(c: ProcessCluster, name: str) -> Proc:
    """A fourth process, not yet started, with ports of its own."""
    client, peer, metrics = free_ports(3)
    m = Proc(name, client, peer, metrics, c.root / name, c.root / f"{name}.log")
    c.members.append(m)
    return m


def start_joining(c: ProcessCluster, m: Proc) -> None:
    cmd = c.command(m, state="existing")
    log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child
    m.popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def members(c: ProcessCluster) -> list[dict[str, object]]:
    doc = etcdctl_json(c.endpoints, "member", "list")
    return list(doc["members"])  # type: ignore[call-overload]


def test_a_learner_joins_catches_up_and_is_promoted(cluster: ProcessCluster) -> None:
    for i in range(250):  # past --snapshot-count: the newcomer gets a snapshot
        etcdctl(cluster.endpoints, "put", f"k{i}", f"v{i}")
    new = add_member(cluster, "m4")
    out = etcdctl(
        cluster.endpoints, "member", "add", "m4", f"--peer-urls={new.peer_url}", "--learner"
    ).stdout
    assert "added" in out.lower() and "ETCD_INITIAL_CLUSTER_STATE" in out
    start_joining(cluster, new)
    wait_for(
        "the learner to catch up",
        lambda: (
            "v249" in etcdctl(new.endpoint, "get", "k249", "--consistency=s", check=False).stdout
        ),
        timeout=30,
    )
    listed = {str(m.get("name", "")): m for m in members(cluster)}
    assert listed["m4"].get("isLearner") is True
    member_id = int(listed["m4"]["ID"])  # type: ignore[call-overload]
    wait_for(
        "promotion to be accepted",
        lambda: (
            etcdctl(
                cluster.endpoints, "member", "promote", f"{member_id:x}", check=False
            ).returncode
            == 0
        ),
        timeout=20,
    )
    listed = {str(m.get("name", "")): m for m in members(cluster)}
    assert not listed["m4"].get("isLearner"), listed["m4"]
    assert len(listed) == 4
    etcdctl(new.endpoint, "put", "through-m4", "ok")


def test_promoting_a_member_that_is_not_a_learner_is_refused(cluster: ProcessCluster) -> None:
    mid = int(members(cluster)[0]["ID"])  # type: ignore[call-overload]
    r = etcdctl(cluster.endpoints, "member", "promote", f"{mid:x}", check=False)
    assert r.returncode != 0 and "can only promote a learner member" in r.stderr


def test_a_removed_member_stops_and_refuses_to_start_again(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    victim = next(m for m in cluster.members if m is not leader)
    victim_id = next(
        int(m["ID"])  # type: ignore[call-overload]
        for m in members(cluster)
        if m.get("name") == victim.name
    )
    etcdctl(leader.endpoint, "member", "remove", f"{victim_id:x}")
    assert victim.popen is not None
    victim.popen.wait(timeout=15)
    assert len(members(cluster)) == 2
    etcdctl(leader.endpoint, "put", "after-removal", "ok")
    again = subprocess.run(cluster.command(victim), capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "removed" in again.stderr, again.stderr


def test_a_wiped_member_cannot_come_back_under_its_old_identity(
    cluster: ProcessCluster,
) -> None:
    new = add_member(cluster, "m4")
    etcdctl(cluster.endpoints, "member", "add", "m4", f"--peer-urls={new.peer_url}", "--learner")
    start_joining(cluster, new)
    wait_for(
        "the new member to publish its name",
        lambda: any(m.get("name") == "m4" for m in members(cluster)),
        timeout=20,
    )
    cluster.kill(new)
    subprocess.run(["rm", "-rf", str(new.data_dir)], check=True)
    again = subprocess.run(
        cluster.command(new, state="existing"), capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 2
    assert "remove it" in again.stderr and "add it again" in again.stderr, again.stderr


def set_voters(endpoint: str, voters: set[int], learners: set[int] = frozenset()) -> list[str]:
    import grpc

    from flotilla.node.api.etcdpb import flotilla_pb2, flotilla_pb2_grpc

    with grpc.insecure_channel(endpoint) as ch:
        stub = flotilla_pb2_grpc.MembershipStub(ch)
        req = flotilla_pb2.SetVotersRequest(voters=sorted(voters), learners=sorted(learners))
        return [p.phase for p in stub.SetVoters(req, timeout=30)]


def test_three_to_five_and_back_in_one_joint_transition_each(cluster: ProcessCluster) -> None:
    joiners = [add_member(cluster, f"m{i}") for i in (4, 5)]
    for j in joiners:
        etcdctl(
            cluster.endpoints, "member", "add", j.name, f"--peer-urls={j.peer_url}", "--learner"
        )
        start_joining(cluster, j)
    etcdctl(cluster.endpoints, "put", "k", "v")
    for j in joiners:
        wait_for(
            f"{j.name} to catch up",
            lambda j=j: (
                "v" in etcdctl(j.endpoint, "get", "k", "--consistency=s", check=False).stdout
            ),
            timeout=30,
        )
    ids = {str(m.get("name")): int(m["ID"]) for m in members(cluster)}  # type: ignore[call-overload]
    leader = cluster.wait_leader()
    phases = wait_for(
        "the 3 -> 5 transition",
        lambda: _try(lambda: set_voters(leader.endpoint, set(ids.values()))),
        timeout=20,
    )
    assert phases == ["joint", "done"]
    assert sum(1 for m in members(cluster) if not m.get("isLearner")) == 5

    keep = {ids["m1"], ids["m2"], ids["m3"]}
    leader = cluster.wait_leader()
    assert set_voters(leader.endpoint, keep) == ["joint", "done"]
    for j in joiners:
        assert j.popen is not None
        j.popen.wait(timeout=15)
    assert len(members(cluster)) == 3
    etcdctl(cluster.endpoints, "put", "after", "ok")


def _try(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except Exception:
        return None


def test_member_update_changes_peer_urls_and_refuses_unknown_ids(cluster: ProcessCluster) -> None:
    # A learner that is not running: changing its URLs disturbs no one.
    old, new = (f"http://127.0.0.1:{p}" for p in free_ports(2))
    etcdctl(cluster.endpoints, "member", "add", "later", f"--peer-urls={old}", "--learner")
    mid = next(
        int(m["ID"])  # type: ignore[call-overload]
        for m in members(cluster)
        if m["peerURLs"] == [old]
    )
    etcdctl(cluster.endpoints, "member", "update", f"{mid:x}", f"--peer-urls={new}")
    urls = {str(m["peerURLs"][0]) for m in members(cluster)}  # type: ignore[index]
    assert new in urls and old not in urls
    r = etcdctl(cluster.endpoints, "member", "update", "1234", f"--peer-urls={old}", check=False)
    assert r.returncode != 0 and "member not found" in r.stderr
    taken = next(
        str(m["peerURLs"][0])  # type: ignore[index]
        for m in members(cluster)
        if int(m["ID"]) != mid  # type: ignore[call-overload]
    )
    r = etcdctl(
        cluster.endpoints, "member", "update", f"{mid:x}", f"--peer-urls={taken}", check=False
    )
    assert r.returncode != 0 and "Peer URLs already exists" in r.stderr
