"""The pure parts of the I/O shell: reading members' answers, and which Events a pass tells."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from kubernetes import client

from flotilla.operator import plan as p
from flotilla.operator.kube import authorization
from flotilla.operator.observe import (
    MemberStatus,
    elected,
    flotilla_version,
    parse_alarms,
    read_cluster,
)
from flotilla.operator.reconcile import announcements


def listed(mid: int, name: str, learner: bool = False, peer: str = "") -> SimpleNamespace:
    """One entry of a MemberList answer, as the generated message reads."""
    return SimpleNamespace(ID=mid, name=name, peerURLs=[peer] if peer else [], isLearner=learner)


def status(
    mid: int, leader: int, commit: int = 100, applied: int = 100, term: int = 2
) -> MemberStatus:
    return MemberStatus(mid, leader, term, commit, applied, "0.1.0")


def test_version_is_flotillas_own() -> None:
    assert flotilla_version("3.5.0+flotilla.0.1.0") == "0.1.0"
    assert flotilla_version("0.2.0") == "0.2.0"


def test_the_leader_is_the_member_that_says_so_and_the_newest_term_wins() -> None:
    assert elected({0: status(1, 1), 1: status(2, 1)}) == 0
    assert elected({0: status(1, 2), 1: status(2, 0)}) is None  # 2 named, but not answering
    stale, new = MemberStatus(1, 1, 3, 9, 9, ""), MemberStatus(2, 2, 4, 9, 9, "")
    assert elected({0: stale, 1: new}) == 1


def test_members_are_matched_to_pods_and_lag_is_measured_from_the_leader() -> None:
    peer = "http://db-3.db-peer.ns.svc.cluster.local:2380"
    members = [listed(1, "db-0"), listed(2, "db-1"), listed(3, "", learner=True, peer=peer)]
    statuses = {0: status(1, 1, commit=120), 1: status(2, 1, applied=90)}
    cluster = read_cluster("db", statuses, members, 1)
    assert cluster is not None and cluster.leader_id == 1
    m0, m1, m3 = cluster.members
    assert (m0.ordinal, m0.healthy, m0.lag) == (0, True, 20)
    assert (m1.ordinal, m1.healthy, m1.lag) == (1, True, 30)
    # The learner's pod does not exist yet: known by its peer URL, unhealthy, lag unknown.
    assert (m3.ordinal, m3.is_learner, m3.healthy, m3.lag) == (3, True, False, None)


def test_alarms_are_the_leaders_as_status_words_them() -> None:
    errors = ["memberID:12 alarm:CORRUPT", "memberID:7 alarm:NOSPACE", "something else"]
    assert parse_alarms(errors) == ((12, "CORRUPT"), (7, "NOSPACE"))
    leader = replace(status(1, 1), alarms=((12, "CORRUPT"),))
    stale = replace(status(2, 1), alarms=((7, "NOSPACE"),))  # not applied the disarm yet
    cluster = read_cluster("db", {0: leader, 1: stale}, [listed(1, "db-0"), listed(2, "db-1")], 1)
    assert cluster is not None and cluster.alarms == ((12, "CORRUPT"),)


def test_no_answer_is_no_cluster_and_no_leader_is_no_quorum() -> None:
    assert read_cluster("db", {}, None, None) is None
    cluster = read_cluster("db", {0: status(1, 0)}, [listed(1, "db-0"), listed(2, "db-1")], None)
    assert cluster is not None and not cluster.has_quorum
    assert not any(m.healthy for m in cluster.members)  # knowing no leader is not healthy


def test_a_wait_is_told_once_and_again_when_it_changes() -> None:
    wait = p.WaitFor("LearnersCatchingUp", "waiting for pod 3 to catch up")
    op = {"operation": {"message": wait.message}, "phase": "Scaling"}
    assert announcements(wait, {}, op, None) == [
        ("LearnersCatchingUp", "waiting for pod 3 to catch up", False)
    ]
    assert announcements(wait, op, op, None) == []


def test_failures_and_alarms_are_warnings_done_is_told_when_reached() -> None:
    step = p.AddLearner(3)
    assert announcements(step, {}, {}, "UNAVAILABLE: no leader") == [
        ("StepFailed", "adding pod 3 as a learner: UNAVAILABLE: no leader", True)
    ]
    lost = p.ReportQuorumLost("no member answers; the cluster has no quorum")
    was = {"phase": "QuorumLost", "conditions": [{"type": "Degraded", "message": lost.message}]}
    assert announcements(lost, {"phase": "Running"}, was, None) == [
        ("QuorumLost", lost.message, True)
    ]
    assert announcements(lost, was, was, None) == []
    done = p.Done()
    assert announcements(done, {"phase": "Scaling"}, {"phase": "Running"}, None) == [
        ("Reconciled", "the cluster matches the spec", False)
    ]
    assert announcements(done, {"phase": "Running"}, {"phase": "Running"}, None) == []
    assert announcements(done, {"phase": "Running"}, {"phase": "Degraded"}, None) == []
    assert announcements(done, {"phase": "Degraded"}, {"phase": "Running"}, None) == [
        ("Reconciled", "the cluster matches the spec", False)
    ]


def test_the_service_account_token_is_sent_in_cluster_and_from_a_kubeconfig() -> None:
    in_cluster = client.Configuration()
    in_cluster.api_key = {"BearerToken": "Bearer sa-token"}  # as load_incluster_config does
    assert authorization(in_cluster) == "Bearer sa-token"
    kubeconfig = client.Configuration()
    kubeconfig.api_key = {"authorization": "Bearer user-token"}
    assert authorization(kubeconfig) == "Bearer user-token"
    assert authorization(client.Configuration()) is None  # client certificates only


def test_a_raised_alarm_is_a_warning_told_once_and_again_when_it_changes() -> None:
    def degraded(reason: str, message: str) -> dict[str, object]:
        return {"conditions": [{"type": "Degraded", "reason": reason, "message": message}]}

    done = p.Done()
    healthy = degraded("Healthy", "")
    corrupt = degraded("AlarmRaised", "CORRUPT raised for member db-1: ...")
    assert announcements(done, healthy, corrupt, None) == [
        ("AlarmRaised", "CORRUPT raised for member db-1: ...", True)
    ]
    assert announcements(done, corrupt, corrupt, None) == []
    both = degraded("AlarmRaised", "CORRUPT raised for member db-1: ...; NOSPACE ...")
    assert [e[0] for e in announcements(done, corrupt, both, None)] == ["AlarmRaised"]
    assert announcements(done, corrupt, healthy, None) == []
