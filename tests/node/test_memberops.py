"""Membership decisions, as pure functions: quorum safety, learners, etcd's errors."""

from __future__ import annotations

import grpc
import pytest

from flotilla.node import memberops
from flotilla.node.members import Member
from flotilla.node.raft.types import ConfState

CONF = ConfState(frozenset({1, 2, 3}), frozenset(), frozenset({4}))
MEMBERS = {i: Member(i, f"m{i}", (f"http://h{i}:2380",), ()) for i in (1, 2, 3, 4)}


def test_removing_a_voter_is_refused_when_too_few_healthy_voters_would_remain() -> None:
    with pytest.raises(memberops.MemberOpError) as err:
        memberops.remove(CONF, MEMBERS, 3, healthy={1}, force=False)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.message == "etcdserver: unhealthy cluster"
    change = memberops.remove(CONF, MEMBERS, 3, healthy={1}, force=True)
    assert change.voters == {1, 2}


def test_adding_a_voter_counts_it_as_not_yet_healthy() -> None:
    new = Member(9, "", ("http://h9:2380",), ())
    assert memberops.add(CONF, MEMBERS, new, healthy={1, 2, 3}).voters == {1, 2, 3, 9}
    with pytest.raises(memberops.MemberOpError):
        memberops.add(CONF, MEMBERS, new, healthy={1, 2})


def test_peer_urls_in_use_are_refused() -> None:
    dup = Member(9, "", ("http://h2:2380",), (), True)
    with pytest.raises(memberops.MemberOpError) as err:
        memberops.add(CONF, MEMBERS, dup, healthy={1, 2, 3})
    assert err.value.message == "etcdserver: Peer URLs already exists"


def test_promotion_needs_a_caught_up_learner_and_says_how_far_behind_it_is() -> None:
    with pytest.raises(memberops.MemberOpError) as err:
        memberops.promote(CONF, MEMBERS, 4, lag=None, leader_last=50)
    assert "in sync with leader" in err.value.message and "not caught up" in err.value.detail
    with pytest.raises(memberops.MemberOpError) as err:
        memberops.promote(CONF, MEMBERS, 4, lag=2000, leader_last=100_000)
    assert "2000 entries behind" in err.value.detail
    assert memberops.promote(CONF, MEMBERS, 4, lag=3, leader_last=100).voters == {1, 2, 3, 4}
    with pytest.raises(memberops.MemberOpError) as err:
        memberops.promote(CONF, MEMBERS, 2, lag=0, leader_last=100)
    assert err.value.message == "etcdserver: can only promote a learner member"


def test_set_voters_takes_any_target_of_known_members_in_one_change() -> None:
    change = memberops.set_voters(CONF, MEMBERS, {1, 2, 3, 4}, set(), {1, 2, 3, 4}, False)
    assert change.voters == {1, 2, 3, 4} and not change.learners
    with pytest.raises(memberops.MemberOpError):
        memberops.set_voters(CONF, MEMBERS, {1, 2, 7}, set(), {1, 2}, False)


@pytest.mark.parametrize(
    "urls", [[], [""], ["127.0.0.1:2380"], ["http://host"], ["ftp://h:1"], ["http://h:99999"]]
)
def test_members_without_usable_peer_urls_are_refused_as_etcd_does(urls: list[str]) -> None:
    with pytest.raises(memberops.MemberOpError) as refused:
        memberops.check_peer_urls(urls)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message == "etcdserver: given member URLs are invalid"


def test_http_and_https_peer_urls_are_accepted() -> None:
    memberops.check_peer_urls(["http://a:2380", "https://[::1]:2380"])
