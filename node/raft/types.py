"""Plain values that cross the boundary of the Raft core: entries, messages, snapshots.

These classes carry no behaviour. They use ``__slots__`` and positional construction because
the replication hot path creates one entry per proposal and one message per follower per
turn; that is the budget, and nothing here may add to it.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

NONE = 0
"""The id that means "nobody": no vote cast, no leader known."""


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class Entry:
    """One log entry. ``data`` is opaque to the core except for configuration changes."""

    __slots__ = ("data", "index", "term", "type")

    def __init__(
        self, term: int, index: int, data: bytes = b"", type: EntryType = EntryType.NORMAL
    ) -> None:
        self.term = term
        self.index = index
        self.data = data
        self.type = type

    def __repr__(self) -> str:
        kind = "" if self.type == EntryType.NORMAL else " conf"
        return f"Entry({self.term}/{self.index}{kind} {self.data!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Entry)
            and self.term == other.term
            and self.index == other.index
            and self.type == other.type
            and self.data == other.data
        )

    def __hash__(self) -> int:
        return hash((self.term, self.index))


ENTRY_OVERHEAD = 24
"""Bytes an entry is counted for besides its payload when sizing messages."""


def entry_size(entry: Entry) -> int:
    return len(entry.data) + ENTRY_OVERHEAD


@dataclass(frozen=True, slots=True)
class ConfState:
    """A cluster configuration.

    ``voters`` is the incoming (or only) voter set. ``outgoing`` is non-empty only during a
    joint-consensus transition: decisions then need a majority of both sets. ``learners``
    receive the log but never vote or count; a voter being demoted can sit in ``outgoing``
    and ``learners`` at once during the transition.
    """

    voters: frozenset[int]
    outgoing: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    def all_voters(self) -> frozenset[int]:
        return self.voters | self.outgoing

    def members(self) -> frozenset[int]:
        return self.voters | self.outgoing | self.learners

    def is_voter(self, node_id: int) -> bool:
        return node_id in self.voters or node_id in self.outgoing

    def left(self) -> ConfState:
        """The configuration that ends this joint transition."""
        return ConfState(self.voters, frozenset(), self.learners)

    def __str__(self) -> str:
        def fmt(s: frozenset[int]) -> str:
            return ",".join(str(i) for i in sorted(s))

        text = f"voters=({fmt(self.voters)})"
        if self.outgoing:
            text += f"&&({fmt(self.outgoing)})"
        if self.learners:
            text += f" learners=({fmt(self.learners)})"
        return text


EMPTY_CONF = ConfState(frozenset())


@dataclass(frozen=True, slots=True)
class ConfChange:
    """The payload of a configuration-change entry: the full configuration it installs.

    Carrying the whole target (not a delta) lets any member that replays the log from any
    point know the exact configuration after each change. ``context`` is opaque to the core;
    the application uses it for member metadata such as peer URLs.
    """

    conf: ConfState
    context: bytes = b""

    def encode(self) -> bytes:
        doc = {
            "v": sorted(self.conf.voters),
            "o": sorted(self.conf.outgoing),
            "l": sorted(self.conf.learners),
            "c": self.context.hex(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        doc = json.loads(data)
        conf = ConfState(frozenset(doc["v"]), frozenset(doc["o"]), frozenset(doc["l"]))
        return ConfChange(conf, bytes.fromhex(doc["c"]))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot as it travels: metadata plus the application's opaque state.

    The core never looks at ``data``; the leader's core emits snapshot messages with
    ``data`` left ``None`` and the transport attaches the bytes of the snapshot it holds.
    A receiver may read the data into its state machine as it arrives: it is then in
    ``loaded`` (and ``data`` is empty), which the core passes along untouched.
    """

    meta: SnapshotMeta
    data: bytes | None = None
    loaded: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before a member may answer anything that depends on it."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


class MessageType(enum.IntEnum):
    APP = 1
    APP_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9
    PROP = 10
    READ_INDEX = 11
    READ_INDEX_RESP = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14


RESPONSE_TYPES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.PRE_VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.READ_INDEX_RESP,
    }
)

CAMPAIGN_TRANSFER = 1
"""``Message.context`` of a vote request sent because the leader asked for the election."""

COMMIT_ONLY = 1
"""``Message.context`` of an empty append that only announces a commit index to a follower
the leader is streaming to: the follower answers it only to reject. Accepted, it would
acknowledge nothing the follower has not acknowledged already (it answered the appends
before it, in order), and at one write at a time those answers were a third of a
follower's messages."""


class Message:
    """One Raft message. Field names follow etcd-io/raft's ``raftpb.Message``.

    ``context`` is a small integer: the heartbeat round a heartbeat belongs to (read
    confirmation), ``CAMPAIGN_TRANSFER`` on vote requests, or ``COMMIT_ONLY`` on appends.
    ``reads`` carries the opaque request contexts of ReadIndex requests and responses.
    """

    __slots__ = (
        "commit",
        "context",
        "entries",
        "frm",
        "index",
        "log_term",
        "reads",
        "reject",
        "reject_hint",
        "snapshot",
        "term",
        "to",
        "type",
    )

    def __init__(
        self,
        type: MessageType,
        to: int,
        frm: int,
        term: int = 0,
        *,
        log_term: int = 0,
        index: int = 0,
        entries: list[Entry] | None = None,
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        snapshot: Snapshot | None = None,
        context: int = 0,
        reads: tuple[bytes, ...] = (),
    ) -> None:
        self.type = type
        self.to = to
        self.frm = frm
        self.term = term
        self.log_term = log_term
        self.index = index
        self.entries: list[Entry] = entries if entries is not None else []
        self.commit = commit
        self.reject = reject
        self.reject_hint = reject_hint
        self.snapshot = snapshot
        self.context = context
        self.reads = reads

    def __repr__(self) -> str:
        parts = [f"{self.type.name} {self.frm}->{self.to} t{self.term}"]
        if self.type in (MessageType.APP, MessageType.APP_RESP, MessageType.VOTE):
            parts.append(f"lt{self.log_term} i{self.index}")
        if self.entries:
            parts.append(f"ents={self.entries[0].index}..{self.entries[-1].index}")
        if self.commit:
            parts.append(f"c{self.commit}")
        if self.reject:
            parts.append(f"reject(hint={self.reject_hint})")
        if self.snapshot is not None:
            parts.append(f"snap={self.snapshot.meta.index}/{self.snapshot.meta.term}")
        if self.context:
            parts.append(f"ctx={self.context}")
        if self.reads:
            parts.append(f"reads={len(self.reads)}")
        return "Message(" + " ".join(parts) + ")"


@dataclass(frozen=True, slots=True)
class ReadState:
    """Linearizable reads that may be served once ``index`` has been applied.

    The core releases a ReadState only in a Ready whose committed entries (or earlier
    applies) reach ``index``, so the application serves them right after applying.
    """

    index: int
    contexts: tuple[bytes, ...]


@dataclass(slots=True)
class Ready:
    """Everything the application must do this turn, in order.

    1. persist ``snapshot`` (if any), then ``entries`` — replacing any stored entries at or
       after ``entries[0].index`` — and ``hard_state`` (if not ``None``), in one write, made
       durable (fsync) when ``must_sync``;
    2. send ``messages`` at any time (they do not depend on this turn's persistence: the
       leader's appends go out while its own write is in flight), and
       ``messages_after_persist`` only once step 1 is durable;
    3. restore ``snapshot`` into the state machine (or in step 1's write, which keeps the
       log from ever naming a snapshot the state machine does not hold), apply
       ``committed_entries`` in order;
    4. serve ``read_states``;
    5. call ``advance(ready)``.
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
    """Whether step 1 must reach the disk before anything else happens: new entries, a
    snapshot, or a new term or vote. A hard state whose commit index alone moved need not be
    synced (etcd's ``MustSync``): a commit index lost to a crash is learned again from the
    leader, and the write still goes first into the same ordered log as the apply that
    follows it. Syncing it would put an fsync between every commit and its apply."""
