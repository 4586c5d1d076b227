"""Cluster members as the application knows them: ids, names, URLs.

Ids are derived exactly as etcd derives them (SHA-1 of the sorted peer URLs and the cluster
token, plus the time for members added later), so an id never comes back for a member that
was removed and added again: the old identity cannot rejoin.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "peer_urls": list(self.peer_urls),
            "client_urls": list(self.client_urls),
            "is_learner": self.is_learner,
        }

    @staticmethod
    def from_json(doc: dict[str, object]) -> Member:
        return Member(
            int(doc["id"]),  # type: ignore[call-overload]
            str(doc["name"]),
            tuple(doc["peer_urls"]),  # type: ignore[arg-type]
            tuple(doc["client_urls"]),  # type: ignore[arg-type]
            bool(doc.get("is_learner", False)),
        )


def member_id_of(peer_urls: Iterable[str], token: str, added_at: int | None = None) -> int:
    data = "".join(sorted(peer_urls)).encode() + token.encode()
    if added_at is not None:
        data += str(added_at).encode()
    return int(struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0])


def cluster_id_of(token: str) -> int:
    """The cluster id, from the cluster token alone.

    etcd hashes the founding members' ids instead; deriving it from the token lets a member
    that joins later (``--initial-cluster-state existing``) know the id before it has
    talked to anyone, so the transport can refuse other clusters' traffic from the start.
    """
    data = b"flotilla-cluster:" + token.encode()
    return int(struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0])


def encode_members(members: Iterable[Member]) -> bytes:
    return json.dumps([m.to_json() for m in members], separators=(",", ":")).encode()


def decode_members(data: bytes) -> list[Member]:
    return [Member.from_json(d) for d in json.loads(data)]
