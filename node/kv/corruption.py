"""Corruption checks: do the members' key-value histories agree? (etcd's corrupt checks.)

Pure decisions over hashes the driver collects. Every member that applied the same entries
holds the same records, so its HashKV at a revision is the same, provided it has compacted
to the same revision (compaction drops records from the hash).

- The **initial check** (``--experimental-initial-corrupt-check``) runs on a member's start,
  before it serves anyone: it asks every peer for the hash at its own revision. A peer with
  the same compact revision and a different hash means this member's data (or the peer's)
  went wrong while it was down, and the member refuses to start rather than serve it.
- The **periodic check** (``--corrupt-check-time``) runs on the leader: its hash at its
  current revision, every peer's hash at that revision, then (after a read barrier, so no
  peer can have applied more) its own current revision again. A peer whose hash differs at
  the same compact revision, that claims more revisions or a later compaction than the
  leader, or a leader whose own hash changed under it, gets the CORRUPT alarm, which
  stops every write in the cluster until an operator disarms it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


class Hash(NamedTuple):
    """One member's answer to HashKV at ``hash_revision``."""

    hash: int
    hash_revision: int
    compact_revision: int
    revision: int
    """The member's current revision when it answered."""


def from_peer(resp: Any) -> Hash:
    """A peer's ``PeerHashResponse`` as a :class:`Hash`."""
    return Hash(resp.hash, resp.hash_revision, resp.compact_revision, resp.revision)


def from_hash_kv(resp: Any) -> Hash:
    """A ``HashKVResponse`` (the etcd API's) as a :class:`Hash`."""
    return Hash(resp.hash, resp.hash_revision, resp.compact_revision, resp.header.revision)


class Suspect(NamedTuple):
    member: int
    reason: str


def periodic_suspect(
    me: int, before: Hash, after: Hash, peers: Mapping[int, Hash]
) -> Suspect | None:
    """The member to raise the CORRUPT alarm for, if any (the first found, as etcd raises
    one alarm per check).

    ``before`` is the leader's hash at its revision when the check began, which the peers
    were asked for; ``after`` its hash at its current revision once a read barrier passed.
    """
    if (
        after.hash_revision == before.hash_revision
        and after.compact_revision == before.compact_revision
        and after.hash != before.hash
    ):
        return Suspect(me, f"own hash at revision {before.hash_revision} changed")
    for member, h in sorted(peers.items()):
        if h.revision > after.revision:
            return Suspect(
                member,
                f"at revision {h.revision}, beyond the leader's {after.revision}",
            )
        if h.compact_revision > after.compact_revision:
            return Suspect(
                member,
                f"compacted to revision {h.compact_revision}, beyond the leader's "
                f"{after.compact_revision}",
            )
        if h.compact_revision == before.compact_revision and h.hash != before.hash:
            return Suspect(
                member,
                f"hash {h.hash:08x} at revision {before.hash_revision}, the leader's "
                f"{before.hash:08x}",
            )
    return None


def initial_mismatches(local: Hash, peers: Mapping[int, Hash]) -> list[Suspect]:
    """The peers whose hash at ``local``'s revision differs from ``local``'s while they
    have compacted to the same revision (a different compaction explains a different hash)."""
    return [
        Suspect(
            member,
            f"hash {h.hash:08x} at revision {local.hash_revision}, this member's {local.hash:08x}",
        )
        for member, h in sorted(peers.items())
        if h.compact_revision == local.compact_revision and h.hash != local.hash
    ]
