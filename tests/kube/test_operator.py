"""The operator end to end: a real API server, real StatefulSet controller, real members.

The operator runs as a local process (``kopf run -m flotilla.operator.handlers``) watching
one namespace, exactly as it would in a pod but with the admin kubeconfig. The members are
``flotilla-node`` processes in pod network namespaces (``tests/kube/images.yaml`` maps the
image ``flotilla/node`` to the installed project). Everything is checked from outside, the
way a person would: ``kubectl``, Events, and ``etcdctl`` against the members.

The tests of this module share one RaftCluster and run in order, as one story: created from
the sample manifest; an alarm raised and disarmed; then, with a writer (``writer.py``)
putting keys through the client Service all along, scaled 3 -> 5 -> 3 -> 1 -> 3 (the operator
killed with SIGKILL in the middle of the last scale-up and started again), a pod deleted, a
pod's claim deleted, upgraded (the operator killed mid-upgrade), rolled onto a version that
crashes and back; finally deleted.
After each operation every acknowledged write must be stored and no run of failed writes may
have lasted more than 3 s. The last test needs no operator: the API server itself refuses
invalid specs.
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

import grpc
import pytest
import yaml

from flotilla.node.api.etcdpb import rpc_pb2, rpc_pb2_grpc
from tests.kube.kubectl import get, get_or_none, kubectl, kubectl_error, pod_ready, wait_for
from tests.kube.localkube.config import REPO_ROOT, Config
from tests.kube.writer import Writer
from tests.node.procs import free_ports

pytestmark = pytest.mark.kube
Obj = dict[str, Any]

SAMPLE = REPO_ROOT / "manifests" / "sample-raftcluster.yaml"
NAME = "example"  # the sample's name
KOPF = [sys.executable, "-m", "kopf", "run", "-m", "flotilla.operator.handlers"]


class Operator:
    """The operator as a local process watching one namespace; it can be killed and restarted."""

    def __init__(self, namespace: str, log: Path) -> None:
        self.namespace, self.log = namespace, log
        self.proc: subprocess.Popen[bytes] | None = None
        # A metrics port of its own: another operator may hold the default (8081), and one
        # that cannot bind its port retries its whole start-up only a minute later.
        (self.metrics_port,) = free_ports(1)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*KOPF, "--standalone", f"--namespace={self.namespace}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, FLOTILLA_OPERATOR_METRICS_PORT=str(self.metrics_port)),
                cwd=self.log.parent,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no chance to finish a step, write status or say goodbye."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def operator(crd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """A fresh namespace with the operator watching it; both gone afterwards."""
    ns = f"op-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    wait_for(
        f"service account default in {ns}",
        lambda: kubectl("get", "sa", "default", "-n", ns, "--ignore-not-found").strip(),
        timeout=30,
    )
    op = Operator(ns, tmp_path_factory.mktemp("operator") / "kopf.log")
    op.start()
    try:
        yield op
    finally:
        # kopf keeps a finalizer on each RaftCluster while its timer runs: delete them while
        # the operator still runs, and never leave one behind to hold the namespace.
        if op.proc is None:
            op.start()
        kubectl("delete", "raftclusters", "--all", "-n", ns, "--timeout=60s", check=False)
        op.stop()
        for rc in kubectl("get", "raftclusters", "-n", ns, "-o", "name", check=False).split():
            unblock = '{"metadata": {"finalizers": null}}'
            kubectl("patch", rc, "-n", ns, "--type=merge", "-p", unblock, check=False)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
        # Kept for a person reading a failure: the operator's own account of each pass.
        print(f"operator log: {op.log}\n" + _tail(op.log))


@pytest.fixture(scope="module")
def operated(operator: Operator) -> str:
    return operator.namespace


@pytest.fixture(scope="module")
def writer(operated: str) -> Iterator[Writer]:
    """Writes through the client Service from the first operation to the last."""
    wait_for("the cluster of the first test", lambda: converged(operated, 3), timeout=60)
    w = Writer(operated, NAME)
    w.start()
    try:
        yield w
    finally:
        w.stop()


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
    # Creation order: timestamps have whole seconds, and a step's events often share one;
    # the operator only ever creates events, so their resource versions give the order.
    mine.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
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

    # `flotilla status` finds the members through the kubeconfig, by the cluster's name.
    out = subprocess.run(
        [sys.executable, "-m", "flotilla.node.cli", "status", f"--cluster={NAME}", "-n", ns,
         f"--kubeconfig={os.environ['KUBECONFIG']}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "cluster OK" in out.stdout and "3/3 voters healthy" in out.stdout, out.stdout
    assert f"leader {leader}" in out.stdout, out.stdout


def test_a_raised_alarm_degrades_the_cluster_until_disarmed(
    operated: str, etcdctl_installed: None
) -> None:
    """The operator reads alarms from the leader's Status: raised, the cluster is Degraded
    with a message naming the alarm and the member, and a Warning Event says so."""
    ns = operated
    eps = endpoints(ns)
    member = member_list(eps[0])[1]
    with grpc.insecure_channel(eps[0]) as channel:
        rpc_pb2_grpc.MaintenanceStub(channel).Alarm(
            rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE,
                memberID=int(member["ID"]),
                alarm=rpc_pb2.NOSPACE,
            ),
            timeout=10,
        )

    def degraded() -> dict[str, str]:
        st = raftcluster(ns).get("status") or {}
        cond = next(c for c in st.get("conditions", []) if c["type"] == "Degraded")
        assert st.get("phase") == "Degraded" and cond["reason"] == "AlarmRaised", (st, cond)
        return cond

    cond = wait_for("the cluster to be Degraded by the alarm", degraded, timeout=60)
    assert cond["message"].startswith(f"NOSPACE raised for member {member['name']}: "), cond
    assert ("AlarmRaised", cond["message"]) in events(ns)

    etcdctl("alarm", "disarm", endpoint=eps[0])
    wait_for("the cluster to run again", lambda: converged(ns, 3), timeout=60)


def budget(ns: str) -> int:
    """``minAvailable`` of the cluster's PodDisruptionBudget."""
    return int(get("poddisruptionbudget", NAME, ns)["spec"]["minAvailable"])


def written(writer: Writer, ns: str, what: str) -> None:
    """Every acknowledged write is stored, and writes never failed for more than 3 s."""
    print(writer.check(endpoints(ns)[0], what))


def test_scale_to_five_through_learners_and_one_joint_transition(
    operated: str, writer: Writer
) -> None:
    ns = operated
    before = len(events(ns))
    started = time.monotonic()
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=5")
    wait_for("5 Ready voters", lambda: converged(ns, 5), timeout=90)
    print(f"3 -> 5 voters in {time.monotonic() - started:.1f}s")
    written(writer, ns, "3 -> 5")

    members = member_list(endpoints(ns)[0])
    assert len(members) == 5 and not any(m.get("isLearner") for m in members)
    told = events(ns)[before:]
    reasons = [r for r, _ in told]
    # Both new members joined as learners before the StatefulSet grew; then one joint step.
    assert reasons.count("AddingLearner") == 2, told
    assert reasons.index("AddingLearner") < reasons.index("ScalingStatefulSet"), told
    reconfigured = [m for r, m in told if r == "Reconfiguring"]
    assert reconfigured == ["joint reconfiguration to 5 voters (joint -> done)"], told
    assert budget(ns) == 3  # five voters keep a quorum of three

    # Back to three: one joint transition out, then the StatefulSet shrinks. The claims of
    # the removed members stay (pvcRetentionPolicy Retain).
    before = len(events(ns))
    started = time.monotonic()
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=3")
    wait_for("3 Ready voters", lambda: converged(ns, 3), timeout=60)
    print(f"5 -> 3 voters in {time.monotonic() - started:.1f}s")
    written(writer, ns, "5 -> 3")
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
    assert budget(ns) == 2
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=endpoints(ns)[0]).strip() == (
        "hello, raft"
    )


def test_scale_to_one_and_back_with_the_operator_killed_mid_scale_up(
    operator: Operator, writer: Writer
) -> None:
    ns = operator.namespace
    wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    started = time.monotonic()
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=1")
    wait_for("1 Ready voter", lambda: converged(ns, 1), timeout=60)
    print(f"3 -> 1 voter in {time.monotonic() - started:.1f}s")
    written(writer, ns, "3 -> 1")
    assert budget(ns) == 1  # one voter: no voluntary disruption at all

    before = len(events(ns))
    started = time.monotonic()
    kubectl("scale", f"raftcluster/{NAME}", "-n", ns, "--replicas=3")

    def learner_added() -> Obj | None:
        st = raftcluster(ns).get("status") or {}
        roles = [m["role"] for m in st.get("members") or []]
        op = st.get("operation") or {}
        return st if op.get("type") == "ScaleUp" and "learner" in roles else None

    st = wait_for("a learner in status during the scale-up", learner_added, timeout=60)
    operator.kill()
    print(f"operator killed mid scale-up: {st['operation']['step']}, members {st['members']}")
    operator.start()
    wait_for("3 Ready voters after the operator restarted", lambda: converged(ns, 3), timeout=90)
    print(f"1 -> 3 voters (operator restarted) in {time.monotonic() - started:.1f}s")
    written(writer, ns, "1 -> 3, operator killed")
    told = events(ns)[before:]
    assert [m for r, m in told if r == "Reconfiguring"] == [
        "joint reconfiguration to 3 voters (joint -> done)"
    ], told
    assert [r for r, _ in told].count("AddingLearner") == 2, told
    assert budget(ns) == 2


def ids(ns: str) -> dict[str, str]:
    """Member name -> id (hex) from the RaftCluster's status."""
    return {m["name"]: m["id"] for m in raftcluster(ns)["status"]["members"]}


def test_a_deleted_pod_comes_back_as_the_same_member(operated: str, writer: Writer) -> None:
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
    written(writer, ns, "pod deleted")
    assert ids(ns) == before
    reasons = [r for r, _ in events(ns)[told:]]
    assert "ReplacingMember" not in reasons and "AddingLearner" not in reasons


def test_a_member_whose_claim_is_deleted_is_replaced_by_a_new_member(
    operated: str, writer: Writer
) -> None:
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
    written(writer, ns, "pod and claim deleted")
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


NEXT = "0.1.1"  # a working next version
BROKEN = "0.1.2"  # a version whose node exits at once


@pytest.fixture(scope="module")
def versions(cluster: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Images ``flotilla/node:NEXT`` and ``flotilla/node:BROKEN``.

    NEXT is this project's node reporting version NEXT: a stand-in for a real next release
    (the rollout must see each member come back on the new version, and only the version
    the member reports tells it so). BROKEN exits with an error before it serves anything,
    as a release that cannot start on the cluster's data would.
    """
    root = tmp_path_factory.mktemp("images")
    code = (
        "import sys, flotilla.node as n; "
        f"n.__version__ = n.__version__.split('+')[0] + '+flotilla.{NEXT}'; "
        "from flotilla.node.main import main; sys.exit(main(sys.argv[1:]))"
    )
    scripts = {
        NEXT: f'#!/bin/sh\nexec {sys.executable} -c "{code}" "$@"\n',
        BROKEN: "#!/bin/sh\necho 'flotilla-node: this build cannot start' >&2\nexit 3\n",
    }
    rules = []
    for tag, script in scripts.items():
        bindir = root / tag / "bin"
        bindir.mkdir(parents=True)
        (bindir / "flotilla-node").write_text(script)
        (bindir / "flotilla-node").chmod(0o755)
        rules.append({"image": "flotilla/node", "tag": tag, "path": [str(bindir)]})
    runtime = cluster.state / "images.yaml"
    runtime.write_text(yaml.safe_dump({"images": rules}))
    yield
    runtime.unlink(missing_ok=True)


def set_version(ns: str, version: str) -> None:
    patch = json.dumps({"spec": {"version": version}})
    kubectl("patch", "raftcluster", NAME, "-n", ns, "--type=merge", "-p", patch)


def on_version(ns: str, version: str) -> Obj | None:
    rc = converged(ns, 3)
    assert rc is not None
    reported = {m["version"] for m in rc["status"]["members"]}
    if rc["status"]["currentVersion"] != version or reported != {version}:
        raise AssertionError(f"members report {reported}")
    return rc


def test_upgrade_rolls_one_pod_at_a_time_leader_last_across_an_operator_restart(
    operator: Operator, writer: Writer, versions: None
) -> None:
    ns = operator.namespace
    rc = wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    leader, before, told = rc["status"]["leader"], ids(ns), len(events(ns))
    started = time.monotonic()
    set_version(ns, NEXT)

    def one_pod_upgraded() -> Obj | None:
        st = raftcluster(ns).get("status") or {}
        versions = (st.get("currentVersion") or "").split(",")
        return (
            st
            if (st.get("operation") or {}).get("type") == "Upgrade" and NEXT in versions
            else None
        )

    st = wait_for("a pod on the new version in status", one_pod_upgraded, timeout=60)
    operator.kill()
    print(f"operator killed mid-upgrade: versions {st['currentVersion']}, {st['operation']}")
    operator.start()
    rc = wait_for(f"every member on {NEXT}", lambda: on_version(ns, NEXT), timeout=180)
    print(f"upgrade of 3 members (operator restarted) in {time.monotonic() - started:.1f}s")
    written(writer, ns, "upgrade, operator killed")
    assert ids(ns) == before  # restarted on their data, not replaced
    assert {p["spec"]["containers"][0]["image"] for p in pods(ns)} == {f"flotilla/node:{NEXT}"}
    told_now = events(ns)[told:]
    restarts = [m for r, m in told_now if r == "RestartingPod"]
    assert len(restarts) == 3, told_now  # each pod once, whichever operator did it
    # Followers first; the leader's pod last, after leadership moved away from it.
    assert restarts[-1] == f"restarting pod {leader.rsplit('-', 1)[1]}", told_now
    reasons = [r for r, _ in told_now]
    last = len(reasons) - 1 - reasons[::-1].index("RestartingPod")
    assert "TransferringLeadership" in reasons[:last], told_now
    assert rc["status"]["leader"] != leader
    assert etcdctl("get", "greeting", "--print-value-only", endpoint=endpoints(ns)[0]).strip() == (
        "hello, raft"
    )


def warnings(ns: str) -> list[tuple[str, str]]:
    out = get("events", None, ns)["items"]
    return [
        (e["reason"], e["message"])
        for e in out
        if e["involvedObject"].get("kind") == "RaftCluster" and e["type"] == "Warning"
    ]


def test_a_version_that_crashes_halts_the_rollout_and_going_back_recovers(
    operated: str, writer: Writer, versions: None
) -> None:
    ns = operated
    wait_for("the cluster of the earlier tests", lambda: on_version(ns, NEXT), timeout=30)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(ns)}
    started = time.monotonic()
    set_version(ns, BROKEN)

    def halted() -> Obj | None:
        st = raftcluster(ns).get("status") or {}
        degraded = next(c for c in st.get("conditions") or [] if c["type"] == "Degraded")
        if degraded["status"] != "True" or degraded["reason"] != "RolloutHalted":
            raise AssertionError(f"phase {st.get('phase')}, Degraded: {degraded}")
        return st

    st = wait_for("the rollout to halt with Degraded", halted, timeout=90)
    print(f"broken version halted in {time.monotonic() - started:.1f}s: {st['phase']}")
    assert st["phase"] == "Degraded"
    assert any(r == "RolloutHalted" and BROKEN in m for r, m in warnings(ns)), warnings(ns)
    # Exactly one pod was touched: it runs the broken image; the others kept their pods.
    now = pods(ns)
    broken = [
        p["metadata"]["name"] for p in now if p["spec"]["containers"][0]["image"].endswith(BROKEN)
    ]
    assert len(broken) == 1, broken
    assert all(
        p["metadata"]["uid"] == uids[p["metadata"]["name"]]
        for p in now
        if p["metadata"]["name"] not in broken
    )
    # The cluster serves on: two of three voters, and status says who leads.
    available = next(c for c in st["conditions"] if c["type"] == "Available")
    assert available["status"] == "True", st["conditions"]
    written(writer, ns, "broken version halted")

    started = time.monotonic()
    set_version(ns, NEXT)
    wait_for(f"every member back on {NEXT}", lambda: on_version(ns, NEXT), timeout=120)
    print(f"recovered from the broken version in {time.monotonic() - started:.1f}s")
    written(writer, ns, "broken version rolled back")


def test_deleting_the_cluster_takes_what_it_owns_and_keeps_the_claims(
    operated: str, writer: Writer
) -> None:
    ns = operated
    wait_for("the cluster of the earlier tests", lambda: converged(ns, 3), timeout=30)
    writer.stop()
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

    by_time = {"mode": "revision", "retention": "5m"}
    err = kubectl_error("apply", "-n", namespace, "-f", "-", stdin=_sample(autoCompaction=by_time))
    assert "must be a number of revisions when mode is revision" in err, err

    daily = {"interval": "1d"}
    err = kubectl_error("apply", "-n", namespace, "-f", "-", stdin=_sample(corruptionCheck=daily))
    assert "spec.corruptionCheck.interval" in err and "should match" in err, err

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
    # Not left for an operator that watches every namespace (test_operator_in_cluster).
    kubectl("delete", "raftcluster", NAME, "-n", namespace)
