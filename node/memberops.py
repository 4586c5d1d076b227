"""Membership requests of etcd's Cluster service, decided as pure functions.

Each request becomes one target configuration for the Raft core (which turns any change of
the voter set into one joint-consensus transition) plus the member metadata to record, or an
error with etcd's status and message. Checks that need live numbers (is the learner caught
up? would the change leave a quorum of healthy voters?) take those numbers as arguments.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

from .members import Member
from .raft.types import ConfState

log = logging.getLogger("flotilla.node")

# A learner is "in sync" when its match index is within this many entries of the leader's.
LEARNER_READY_LAG = 1000
MAX_LEARNERS = 4


class MemberOpError(Exception):
    """``message`` is etcd's exact text (clients match on it); ``detail`` says more."""

    def __init__(self, code: grpc.StatusCode, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


MEMBER_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
PEER_URL_EXISTS = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
NOT_LEARNER = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_NOT_READY = (
    grpc.StatusCode.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
TOO_MANY_LEARNERS = (
    grpc.StatusCode.FAILED_PRECONDITION,
    "etcdserver: too many learner members in cluster",
)
UNHEALTHY = (grpc.StatusCode.UNAVAILABLE, "etcdserver: unhealthy cluster")
BAD_URLS = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")


def check_peer_urls(urls: list[str]) -> None:
    """etcd refuses a member without peer URLs, or with one that is not scheme://host:port;
    such a member could never be reached, and every member would try."""
    if not urls:
        raise _fail(BAD_URLS, "no peer URL given")
    for u in urls:
        try:
            parts = urlsplit(u)
            port = parts.port
        except ValueError as exc:
            raise _fail(BAD_URLS, f"{u!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise _fail(BAD_URLS, f"{u!r} is not http(s)://host:port")


def _fail(err: tuple[grpc.StatusCode, str], detail: str = "") -> MemberOpError:
    """etcd's exact message (clients recognise errors by it); the detail goes to the log."""
    code, message = err
    if detail:
        log.info("%s: %s", message, detail)
    return MemberOpError(code, message, detail)


@dataclass(frozen=True)
class Change:
    voters: frozenset[int]
    learners: frozenset[int]
    context: bytes


def _context(add: list[Member] | None = None, remove: list[int] | None = None) -> bytes:
    doc = {"add": [m.to_json() for m in add or []], "remove": remove or []}
    return json.dumps(doc, separators=(",", ":")).encode()


def _quorum_check(voters: frozenset[int], healthy: set[int], force: bool) -> None:
    if force:
        return
    alive = len(voters & healthy)
    if alive < len(voters) // 2 + 1:
        raise _fail(
            UNHEALTHY,
            f"the new configuration would have {alive} healthy of {len(voters)} voters",
        )


def add(
    conf: ConfState,
    members: dict[int, Member],
    new: Member,
    healthy: set[int],
    force: bool = False,
) -> Change:
    urls = {u for m in members.values() for u in m.peer_urls}
    if urls & set(new.peer_urls):
        raise _fail(PEER_URL_EXISTS)
    if new.is_learner:
        if len(conf.learners) >= MAX_LEARNERS:
            raise _fail(TOO_MANY_LEARNERS)
        return Change(conf.voters, conf.learners | {new.id}, _context(add=[new]))
    voters = conf.voters | {new.id}
    # The new member is not running yet: it counts as unhealthy until it is.
    _quorum_check(voters, healthy, force)
    return Change(voters, conf.learners, _context(add=[new]))


def remove(
    conf: ConfState, members: dict[int, Member], member_id: int, healthy: set[int], force: bool
) -> Change:
    if member_id not in members:
        raise _fail(MEMBER_NOT_FOUND)
    voters = conf.voters - {member_id}
    if not voters:
        raise MemberOpError(
            grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: cannot remove the last voter"
        )
    _quorum_check(voters, healthy, force)
    return Change(voters, conf.learners - {member_id}, _context(remove=[member_id]))


def promote(
    conf: ConfState,
    members: dict[int, Member],
    member_id: int,
    lag: int | None,
    leader_last: int,
) -> Change:
    """Promote a learner that is in sync: within 10% of the leader's log (as etcd) and within
    ``LEARNER_READY_LAG`` entries; ``lag`` is None for a learner that never answered."""
    if member_id not in members:
        raise _fail(MEMBER_NOT_FOUND)
    if member_id not in conf.learners:
        raise _fail(NOT_LEARNER)
    if lag is None:
        raise _fail(LEARNER_NOT_READY, "it has not caught up at all")
    if lag > LEARNER_READY_LAG or lag > leader_last // 10:
        raise _fail(LEARNER_NOT_READY, f"it is {lag} entries behind")
    return Change(conf.voters | {member_id}, conf.learners - {member_id}, b"")


def set_voters(
    conf: ConfState,
    members: dict[int, Member],
    voters: set[int],
    learners: set[int],
    healthy: set[int],
    force: bool,
) -> Change:
    """Flotilla's own request: any target of voters and learners in one joint transition."""
    unknown = (voters | learners) - set(members)
    if unknown:
        raise _fail(MEMBER_NOT_FOUND, f"unknown ids {sorted(unknown)}")
    target = frozenset(voters)
    _quorum_check(target, healthy, force)
    removed = sorted((conf.members()) - target - set(learners))
    return Change(target, frozenset(learners), _context(remove=removed))
