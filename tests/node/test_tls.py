"""TLS for clients and mutual TLS between members, on real processes with the real etcdctl.

One CA signs the members' certificates; a second CA stands for anyone else. The cluster
requires client certificates on both sides (``--client-cert-auth``,
``--peer-client-cert-auth``), so a client or a would-be member without a certificate of the
cluster's CA is refused during the handshake, before any of its requests is read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from flotilla.node.raft.types import Message, MessageType
from flotilla.node.transport.codec import seal
from flotilla.node.transport.pb import raftpeer_pb2 as peer_pb
from flotilla.node.transport.pb import raftpeer_pb2_grpc as peer_grpc

from .certs import CertAuthority, Issued, node_flags
from .procs import Proc, ProcessCluster, etcdctl, free_port_block, free_ports, wait_for


@dataclass(frozen=True)
class Pki:
    ca: CertAuthority
    server: Issued
    peer: Issued
    client: Issued
    stranger: Issued
    """Signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = CertAuthority.create(root, "cluster")
    other = CertAuthority.create(root, "other")
    return Pki(ca, ca.issue("server"), ca.issue("peer"), ca.issue("client"), other.issue("x"))


@pytest.fixture
def cluster(make_cluster: Callable[..., ProcessCluster], pki: Pki) -> ProcessCluster:
    flags = node_flags(pki.ca, pki.server, pki.peer)
    return make_cluster(3, scheme="https", extra_flags=flags)


def tls_args(ca: CertAuthority, client: Issued | None) -> list[str]:
    args = [f"--cacert={ca.cert_file}"]
    if client is not None:
        args += [f"--cert={client.cert}", f"--key={client.key}"]
    return args


def test_three_members_serve_etcdctl_over_mutual_tls(cluster: ProcessCluster, pki: Pki) -> None:
    tls = tls_args(pki.ca, pki.client)
    etcdctl(cluster.endpoints, *tls, "put", "secret", "value")
    for m in cluster.members:  # replicated over the peers' TLS links, read from each member
        got = etcdctl(m.endpoint, *tls, "get", "secret", "--consistency=s").stdout
        assert got.split() == ["secret", "value"], f"{m.name}: {got!r}"
    health = etcdctl(cluster.endpoints, *tls, "endpoint", "health", check=False)
    assert health.returncode == 0 and health.stderr.count("is healthy") == 3, health.stderr
    listed = etcdctl(cluster.endpoints, *tls, "member", "list").stdout
    assert listed.count("https://127.0.0.1:") == 6, listed  # peer and client URLs


def test_clients_without_a_certificate_of_the_cluster_ca_are_refused(
    cluster: ProcessCluster, pki: Pki
) -> None:
    ca, stranger = pki.ca, pki.stranger
    ep = cluster.members[0].endpoint
    for what, args in [
        ("no client certificate", tls_args(ca, None)),
        ("a certificate of another CA", tls_args(ca, stranger)),
        ("plain text", []),
    ]:
        r = etcdctl(ep, *args, "put", "intruder", what, check=False)
        assert r.returncode != 0, f"{what}: the write was accepted"
    tls = tls_args(ca, pki.client)
    assert etcdctl(ep, *tls, "get", "intruder").stdout == ""


def _term(m: Proc) -> float:
    return m.metric("flotilla_server_term")


def test_a_member_with_a_certificate_of_another_ca_cannot_join_or_send(
    cluster: ProcessCluster, pki: Pki
) -> None:
    ca, stranger = pki.ca, pki.stranger
    tls = tls_args(ca, pki.client)
    leader = cluster.wait_leader()
    term = _term(leader)

    # Added properly, but started with a certificate the cluster's CA did not sign (and
    # trusting the cluster's CA, so only the cluster's refusal can stop it).
    client, peer, metrics = free_ports(3)
    rogue = Proc("m4", client, peer, metrics, cluster.root / "m4", cluster.root / "m4.log")
    rogue.scheme = "https"
    # Sent to a follower, which forwards it to the leader's https client URL with its own
    # client certificate.
    follower = next(m for m in cluster.members if m is not leader)
    add = ["member", "add", "m4", f"--peer-urls={rogue.peer_url}", "--learner"]
    etcdctl(follower.endpoint, *tls, *add)
    rogue.flags = [
        f"--cert-file={stranger.cert}",
        f"--key-file={stranger.key}",
        f"--peer-cert-file={stranger.cert}",
        f"--peer-key-file={stranger.key}",
        f"--peer-trusted-ca-file={ca.cert_file}",
    ]
    cluster.members.append(rogue)
    joined = subprocess.run(
        cluster.command(rogue, state="existing"), capture_output=True, text=True, timeout=60
    )
    assert joined.returncode == 2, joined.stderr
    assert "cannot join the cluster" in joined.stderr, joined.stderr
    cluster.members.remove(rogue)

    # Raft messages straight to a member's peer port: a vote request from a far future term
    # would depose the leader if it were read. The handshake refuses it first.
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_file.read_bytes(),
        private_key=stranger.key.read_bytes(),
        certificate_chain=stranger.cert.read_bytes(),
    )
    target = cluster.members[1].peer_url.removeprefix("https://")
    batch = seal(0, 0x4242, [Message(MessageType.VOTE, 0, 0x4242, int(term) + 100)])
    with grpc.secure_channel(target, creds) as channel:
        stub = peer_grpc.RaftPeerStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Send(iter([batch]), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):
            stub.Members(peer_pb.MembersRequest(), timeout=5)

    # The cluster did not notice: same leader, same term, writes go on.
    etcdctl(cluster.endpoints, *tls, "put", "after", "ok")
    assert cluster.wait_leader() is leader
    assert _term(leader) == term
    wait_for(
        "every member to have the write",
        lambda: all(
            etcdctl(m.endpoint, *tls, "get", "after", "--consistency=s").stdout.split()
            == ["after", "ok"]
            for m in cluster.members
        ),
    )


def test_tls_flags_that_cannot_work_are_refused_before_anything_starts(
    tmp_path: Path, pki: Pki
) -> None:
    server = pki.server
    c = ProcessCluster(tmp_path / "c", 1)
    m = c.members[0]
    peer = [f"--peer-cert-file={pki.peer.cert}", f"--peer-key-file={pki.peer.key}"]
    cases = [
        ("http", [f"--cert-file={server.cert}", f"--key-file={server.key}"], "must be https://"),
        ("https", [f"--cert-file={server.cert}", *peer], "must be given together"),
        (
            "https",
            ["--client-cert-auth", f"--cert-file={server.cert}", f"--key-file={server.key}", *peer],
            "needs --trusted-ca-file",
        ),
        (
            "https",
            [f"--cert-file={server.key}", f"--key-file={server.key}", *peer],
            "holds no PEM certificate",
        ),
        (
            "https",
            [f"--cert-file={tmp_path}/none", f"--key-file={server.key}", *peer],
            "cannot read",
        ),
        (
            "https",
            [f"--cert-file={server.cert}", f"--key-file={server.key}"],
            "--peer-cert-file is not given",
        ),
    ]
    for scheme, flags, message in cases:
        m.flags = flags
        m.scheme = scheme
        r = subprocess.run(c.command(m), capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (flags, r.stderr)
        assert not (m.data_dir / "db").exists(), "the data directory was touched"


def _local_up(data_home: Path, base: int, *args: str) -> subprocess.Popen[str]:
    """``flotilla local up`` with its data (and the CLI's default cluster) under
    ``data_home``, as ``XDG_DATA_HOME``."""
    cli = [sys.executable, "-m", "flotilla.node.cli", "local", "up"]
    return subprocess.Popen(
        [*cli, "--base-port", str(base), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", XDG_DATA_HOME=str(data_home)),
    )


def _flotilla(data_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flotilla.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, XDG_DATA_HOME=str(data_home)),
    )


def test_local_up_with_tls_serves_only_clients_with_its_certificate(tmp_path: Path) -> None:
    base = free_port_block(23)
    proc = _local_up(tmp_path, base, "--tls")
    tls = tmp_path / "flotilla" / "local" / "tls"
    try:
        eps = ",".join(f"127.0.0.1:{base + 10 * i}" for i in range(3))
        ca = f"--cacert={tls / 'ca.crt'}"
        client = [ca, f"--cert={tls / 'client.crt'}", f"--key={tls / 'client.key'}"]
        wait_for(
            "the local TLS cluster to take a write",
            lambda: etcdctl(eps, *client, "put", "hello", "tls", check=False).returncode == 0,
            timeout=40,
        )
        assert etcdctl(eps, ca, "get", "hello", check=False).returncode != 0

        # The flotilla command finds the local cluster and its certificates by itself...
        status = _flotilla(tmp_path, "status", "--json")
        assert status.returncode == 0 and status.stdout.count('"leader"') >= 1, status
        saved = _flotilla(tmp_path, "snapshot", "save", str(tmp_path / "backup.db"))
        assert saved.returncode == 0 and (tmp_path / "backup.db").stat().st_size > 0, saved
        # ... takes etcdctl's flags for other endpoints, and says why plain text fails.
        first = f"https://127.0.0.1:{base}"
        flags = [f"--endpoints={first}", *client]
        assert _flotilla(tmp_path, "members", "list", *flags).returncode == 0
        plain = _flotilla(tmp_path, "status", f"--endpoints=127.0.0.1:{base}")
        assert plain.returncode != 0 and "UNAVAILABLE" in plain.stderr + plain.stdout, plain

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"--cacert={tls / 'ca.crt'}" in out, out  # the etcdctl line to try says how


def test_local_up_names_the_reason_when_tls_flags_cannot_work(tmp_path: Path, pki: Pki) -> None:
    base = free_port_block(23)
    flags = [f"--cert-file={pki.server.cert}", f"--key-file={pki.server.key}"]
    proc = _local_up(tmp_path, base, "--members", "1", "--", *flags)
    out, _ = proc.communicate(timeout=60)
    assert "must be https:// when --cert-file is given" in out, out


def test_a_member_with_the_clusters_certificate_joins_and_catches_up_by_snapshot(
    make_cluster: Callable[..., ProcessCluster], pki: Pki
) -> None:
    flags = [*node_flags(pki.ca, pki.server, pki.peer), "--snapshot-count=50"]
    cluster = make_cluster(3, scheme="https", extra_flags=flags)
    tls = tls_args(pki.ca, pki.client)
    for i in range(120):  # past --snapshot-count: the newcomer gets a snapshot, over TLS
        etcdctl(cluster.endpoints, *tls, "put", f"k{i:03d}", f"v{i}")
    client, peer, metrics = free_ports(3)
    new = Proc("m4", client, peer, metrics, cluster.root / "m4", cluster.root / "m4.log")
    new.scheme = "https"
    etcdctl(
        cluster.endpoints, *tls, "member", "add", "m4", f"--peer-urls={new.peer_url}", "--learner"
    )
    cluster.members.append(new)
    log = open(new.log_path, "ab")  # noqa: SIM115 - owned by the child
    new.popen = subprocess.Popen(
        cluster.command(new, state="existing"), stdout=log, stderr=subprocess.STDOUT
    )
    wait_for(
        "the new member to catch up over TLS",
        lambda: (
            etcdctl(
                new.endpoint, *tls, "get", "k119", "--consistency=s", check=False
            ).stdout.split()
            == ["k119", "v119"]
        ),
        timeout=60,
    )
    assert "installed snapshot" in new.log_path.read_text(), "caught up without a snapshot"
