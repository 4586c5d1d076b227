"""The operator end to end: a real API server, real StatefulSet controller, real members.

The operator runs as a local process (``kopf run -m flotilla.operator.handlers``) watching
one namespace, exactly as it would in a pod but with the admin kubeconfig. The members are
``flotilla-node`` processes in pod network namespaces (``tests/kube/images.yaml`` maps the
image ``flotilla/node`` to the installed project). Everything is checked from outside, the
way a person would: ``kubectl``, Events, and ``etcdctl`` against the members.

The tests of this module share one RaftCluster and run in order: created from the sample
manifest, scaled to five and back to three, a pod deleted, a claim deleted, upgraded,
deleted. The
last test needs no operator: the API server itself refuses invalid specs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.kubectl import get, get_or_none, kubectl, kubectl_error, pod_ready, wait_for
from tests.kube.localkube.config import REPO_ROOT, Config

pytestmark = pytest.mark.kube
Obj = dict[str, Any]

CRD = REPO_ROOT / "crds" / "raftcluster.yaml"
SAMPLE = REPO_ROOT / "manifests" / "sample-raftcluster.yaml"
NAME = "example"  # the sample's name
KOPF = [sys.executable, "-m", "kopf", "run", "-m", "flotilla.operator.handlers"]


@pytest.fixture(scope="module")
def crd(cluster: Config) -> None:
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/raftclusters.flotilla.dev", "--timeout=30s")


@pytest.fixture(scope="module")
def operated(crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh namespace with the operator watching it; both gone afterwards."""
    ns = f"op-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    wait_for(
        f"service account default in {ns}",
        lambda: kubectl("get", "sa", "default", "-n", ns, "--ignore-not-found").strip(),
        timeout=30,
    )
    log = tmp_path_factory.mktemp("operator") / "kopf.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*KOPF, "--standalone", f"--namespace={ns}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            cwd=log.parent,
            start_new_session=True,
        )
    try:
        yield ns
    finally:
        # kopf keeps a finalizer on each RaftCluster while its timer runs: delete them while
        # the operator still runs, and never leave one behind to hold the namespace.
        kubectl("delete", "raftclusters", "--all", "-n", ns, "--timeout=60s", check=False)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for rc in kubectl("get", "raftclusters", "-n", ns, "-o", "name", check=False).split():
            unblock = '{"metadata": {"finalizers": null}}'
            kubectl("patch", rc, "-n", ns, "--type=merge", "-p", unblock, check=False)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
        # Kept for a person reading a failure: the operator's own account of each pass.
        print(f"operator log: {log}\n" + _tail(log))


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(line for line in text[-lines:])


def raftcluster(ns: str) -> Obj:
    return get("raftcluster", NAME, ns)


def pods(ns: str) -> list[Obj]:
    items: list[Obj] = get("pods", None, ns)["items"]
    return sorted(items, key=lambda p: p["metadata"]["name"])


def endpoints(ns: str) -> list[str]:
    return [f"{p['status']['podIP']}:2379" for p in pods(ns) if p["status"].get("podIP")]


def etcdctl(*args: str, endpoint: str) -> str:
    proc = subprocess.run(
        ["etcdctl", f"--endpoints={endpoint}", "--command-timeout=5s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    if proc.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} at {endpoint}: {proc.stderr.strip()}")
    return proc.stdout


def member_list(endpoint: str) -> list[Obj]:
    members: list[Obj] = json.loads(etcdctl("member", "list", "-w", "json", endpoint=endpoint))[
        "members"
    ]
    return members


def converged(ns: str, replicas: int) -> Obj | None:
    """The RaftCluster once it reports ``replicas`` healthy voters, one leader, phase Running."""
    rc = raftcluster(ns)
    st = rc.get("status") or {}
    members = st.get("members") or []
    ready = [p for p in pods(ns) if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]
    ok = (
        st.get("phase") == "Running"
        and st.get("observedGeneration") == rc["metadata"]["generation"]
        and st.get("readyReplicas") == replicas
        and len(ready) == replicas
        and len(members) == replicas
        and all(m["role"] == "voter" and m["healthy"] for m in members)
        and st.get("leader") in {m["name"] for m in members}
    )
    if not ok:
        raise AssertionError(
            f"phase {st.get('phase')}, {len(ready)} ready pods, members "
            f"{[(m.get('name'), m.get('role'), m.get('healthy')) for m in members]}, "
            f"operation {st.get('operation')}"
        )
    return rc


def events(ns: str) -> list[tuple[str, str]]:
    out = get("events", None, ns)["items"]
    mine = [e for e in out if e["involvedObject"].get("kind") == "RaftCluster"]
    mine.sort(key=lambda e: e["metadata"]["creationTimestamp"])
    return [(e["reason"], e["message"]) for e in mine]


@pytest.fixture(scope="module")
def etcdctl_installed() -> None:
    if shutil.which("etcdctl") is None:
        pytest.skip("etcdctl (Debian etcd-client) is not installed")


def test_sample_cluster_comes_up_with_a_leader(operated: str, etcdctl_installed: None) -> None:
    ns = operated
    started = time.monotonic()
    kubectl("apply", "-n", ns, "-f", str(SAMPLE))
    rc = wait_for("3 Ready members with one leader", lambda: converged(ns, 3), timeout=60)
    print(f"3 members Ready with a leader in {time.monotonic() - started:.1f}s")

    # The member list agrees: three voters, and the leader named in status leads.
    eps = endpoints(ns)
    members = member_list(eps[0])
    assert sorted(m["name"] for m in members) == [f"{NAME}-{k}" for k in range(3)]
    assert not any(m.get("isLearner") for m in members)
    leader = rc["status"]["leader"]
    statuses = json.loads(etcdctl("endpoint", "status", "-w", "json", endpoint=",".join(eps)))
    leader_ids = {s["Status"]["leader"] for s in statuses}
    assert len(leader_ids) == 1
    by_id = {m["ID"]: m["name"] for m in members}
    assert by_id[leader_ids.pop()] == leader

    # A write through one member is read back through another.
    etcdctl("put", "greeting", "hello, raft", endpoint=eps[1])
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=eps[2]).strip() == (
        "hello, raft"
    )

    # What people see.
    table = kubectl("get", "raftclusters", "-n", ns)
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "REPLICAS", "READY", "LEADER", "VERSION"]
    assert row.split()[:6] == [NAME, "3", "3", leader, "0.1.0", "Running"]
    reasons = [r for r, _ in events(ns)]
    assert reasons[0] == "CreatingResources" and "Reconciled" in reasons


def test_scale_to_five_through_learners_and_one_joint_transition(operated: str) -> None:
    ns = operated
    wait_for("the cluster of the first test", lambda: converged(ns, 3), timeout=30)
    before = len(events(ns))
    started = time.monotonic()
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=5")
    wait_for("5 Ready voters", lambda: converged(ns, 5), timeout=90)
    print(f"3 -> 5 voters in {time.monotonic() - started:.1f}s")

    members = member_list(endpoints(ns)[0])
    assert len(members) == 5 and not any(m.get("isLearner") for m in members)
    told = events(ns)[before:]
    reasons = [r for r, _ in told]
    # Both new members joined as learners before the StatefulSet grew; then one joint step.
    assert reasons.count("AddingLearner") == 2, told
    assert reasons.index("AddingLearner") < reasons.index("ScalingStatefulSet"), told
    reconfigured = [m for r, m in told if r == "Reconfiguring"]
    assert reconfigured == ["joint reconfiguration to 5 voters (joint -> done)"], told
    pdb = get("poddisruptionbudget", NAME, ns)
    assert pdb["spec"]["minAvailable"] == 3

    # Back to three: one joint transition out, then the StatefulSet shrinks. The claims of
    # the removed members stay (pvcRetentionPolicy Retain).
    before = len(events(ns))
    started = time.monotonic()
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=3")
    wait_for("3 Ready voters", lambda: converged(ns, 3), timeout=60)
    print(f"5 -> 3 voters in {time.monotonic() - started:.1f}s")
    told = events(ns)[before:]
    reasons = [r for r, _ in told]
    assert [m for r, m in told if r == "Reconfiguring"] == [
        "joint reconfiguration to 3 voters (joint -> done)"
    ], told
    assert reasons.index("Reconfiguring") < reasons.index("ScalingStatefulSet"), told
    members = member_list(endpoints(ns)[0])
    assert sorted(m["name"] for m in members) == [f"{NAME}-{k}" for k in range(3)]
    claims = {c["metadata"]["name"] for c in get("pvc", None, ns)["items"]}
    assert {f"data-{NAME}-3", f"data-{NAME}-4"} <= claims
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=endpoints(ns)[0]).strip() == (
        "hello, raft"
    )


def ids(ns: str) -> dict[str, str]:
    """Member name -> id (hex) from the RaftCluster's status."""
    return {m["name"]: m["id"] for m in raftcluster(ns)["status"]["members"]}


def test_a_deleted_pod_comes_back_as_the_same_member(operated: str) -> None:
    ns = operated
    wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    before, told = ids(ns), len(events(ns))
    uid = get("pod", f"{NAME}-1", ns)["metadata"]["uid"]
    started = time.monotonic()
    kubectl("delete", "pod", f"{NAME}-1", "-n", ns, "--wait=false")

    def back() -> Obj | None:
        pod = get("pod", f"{NAME}-1", ns)
        if pod["metadata"]["uid"] == uid:
            raise AssertionError("the old pod is still there")
        return converged(ns, 3)

    wait_for("pod 1 back on its data", back, timeout=60)
    print(f"pod deleted -> Running again in {time.monotonic() - started:.1f}s")
    assert ids(ns) == before
    reasons = [r for r, _ in events(ns)[told:]]
    assert "ReplacingMember" not in reasons and "AddingLearner" not in reasons


def test_a_member_whose_claim_is_deleted_is_replaced_by_a_new_member(operated: str) -> None:
    ns = operated
    wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    before, told = ids(ns), len(events(ns))
    started = time.monotonic()
    # The claim stays Terminating while its pod uses it; the operator takes it from there.
    kubectl("delete", "pvc", f"data-{NAME}-2", "-n", ns, "--wait=false")

    def replaced() -> Obj | None:
        now = ids(ns)
        if now.get(f"{NAME}-2") == before[f"{NAME}-2"]:
            raise AssertionError(f"pod 2 still holds member {before[f'{NAME}-2']}")
        return converged(ns, 3)

    wait_for("a new member on pod 2", replaced, timeout=90)
    print(f"claim deleted -> new member Running in {time.monotonic() - started:.1f}s")
    now = ids(ns)
    assert {k: v for k, v in now.items() if k != f"{NAME}-2"} == {
        k: v for k, v in before.items() if k != f"{NAME}-2"
    }
    reasons = [r for r, _ in events(ns)[told:]]
    assert reasons.index("ReplacingMember") < reasons.index("AddingLearner"), reasons
    assert "Reconfiguring" in reasons
    claim = get("pvc", f"data-{NAME}-2", ns)
    assert claim["metadata"]["annotations"]["flotilla.dev/member-id"] == now[f"{NAME}-2"]
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=endpoints(ns)[2]).strip() == (
        "hello, raft"
    )


NEXT = "0.1.1"


@pytest.fixture
def next_version(cluster: Config, tmp_path: Path) -> Iterator[str]:
    """Image ``flotilla/node:NEXT``: this project's node, reporting version NEXT.

    A stand-in for a real next release: the rollout must see each member come back on the
    new version, and only the version the member reports tells it so.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "flotilla-node"
    code = (
        "import sys, flotilla.node as n; "
        f"n.__version__ = n.__version__.split('+')[0] + '+flotilla.{NEXT}'; "
        "from flotilla.node.main import main; sys.exit(main(sys.argv[1:]))"
    )
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -c "{code}" "$@"\n')
    script.chmod(0o755)
    runtime = cluster.state / "images.yaml"
    rule = {"image": "flotilla/node", "tag": NEXT, "path": [str(bindir)]}
    runtime.write_text(yaml.safe_dump({"images": [rule]}))
    yield NEXT
    runtime.unlink(missing_ok=True)


def test_upgrade_rolls_one_pod_at_a_time_leader_last(operated: str, next_version: str) -> None:
    ns = operated
    rc = wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    leader, before, told = rc["status"]["leader"], ids(ns), len(events(ns))
    started = time.monotonic()
    patch = json.dumps({"spec": {"version": next_version}})
    kubectl("patch", "raftcluster", NAME, "-n", ns, "--type=merge", "-p", patch)

    def upgraded() -> Obj | None:
        rc = converged(ns, 3)
        assert rc is not None
        versions = {m["version"] for m in rc["status"]["members"]}
        if rc["status"]["currentVersion"] != next_version or versions != {next_version}:
            raise AssertionError(f"members report {versions}")
        return rc

    rc = wait_for(f"every member on {next_version}", upgraded, timeout=180)
    print(f"upgrade of 3 members in {time.monotonic() - started:.1f}s")
    assert ids(ns) == before  # restarted on their data, not replaced
    assert {p["spec"]["containers"][0]["image"] for p in pods(ns)} == {
        f"flotilla/node:{next_version}"
    }
    told_now = events(ns)[told:]
    restarts = [m for r, m in told_now if r == "RestartingPod"]
    assert len(restarts) == 3, told_now
    # Followers first; the leader's pod last, after leadership moved away from it.
    assert restarts[-1] == f"restarting pod {leader.rsplit('-', 1)[1]}", told_now
    reasons = [r for r, _ in told_now]
    last = len(reasons) - 1 - reasons[::-1].index("RestartingPod")
    assert "TransferringLeadership" in reasons[:last], told_now
    assert rc["status"]["leader"] != leader
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=endpoints(ns)[0]).strip() == (
        "hello, raft"
    )


def test_deleting_the_cluster_takes_what_it_owns_and_keeps_the_claims(operated: str) -> None:
    ns = operated
    wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    kubectl("delete", "raftcluster", NAME, "-n", ns, "--timeout=60s")
    owned = [
        ("statefulset", NAME),
        ("service", NAME),
        ("service", f"{NAME}-peer"),
        ("poddisruptionbudget", NAME),
    ]

    def gone() -> bool:
        left = [f"{kind}/{name}" for kind, name in owned if get_or_none(kind, name, ns)]
        if left:
            raise AssertionError(f"still there: {left}")
        return True

    # The garbage collector follows the owner references (no handler involved).
    wait_for("the objects owned by the RaftCluster to go", gone, timeout=90)
    claims = {c["metadata"]["name"] for c in get("pvc", None, ns)["items"]}
    assert {f"data-{NAME}-{k}" for k in range(3)} <= claims  # pvcRetentionPolicy: Retain


# --- the API server refuses what the operator could not follow ----------------------------


def _sample(**spec: Any) -> str:
    doc = yaml.safe_load(SAMPLE.read_text())
    doc["spec"].update(spec)
    return json.dumps(doc)


def test_invalid_clusters_are_refused_with_a_readable_message(crd: None, namespace: str) -> None:
    err = kubectl_error("apply", "-n", namespace, "-f", "-", stdin=_sample(replicas=0))
    assert "spec.replicas" in err and "greater than or equal to 1" in err, err

    err = kubectl_error("apply", "-n", namespace, "-f", "-", stdin=_sample(replica=3))
    assert 'unknown field "spec.replica"' in err, err

    kubectl("apply", "-n", namespace, "-f", "-", stdin=_sample())
    err = kubectl_error(
        "patch",
        "raftcluster",
        NAME,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"storage": {"size": "2Gi"}}}',
    )
    assert "storage is immutable" in err, err
