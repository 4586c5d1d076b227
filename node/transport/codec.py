"""Raft messages to and from their wire form (``RaftMessage`` of ``raftpeer.proto``).

This is the hot path: every message a member sends or receives passes here once. Encoding
fills a message in place (``encode_into``) so a batch's messages are built inside the batch
rather than built and then copied into it; fields at their default are left unset (one
attribute store fewer each, and nothing on the wire); entries are added with the repeated
field's ``add`` and enums are looked up in tables, not called.

Snapshot data never travels in a ``RaftMessage``: only the metadata does, the data is streamed
in chunks (see ``snapshot``).
"""

from __future__ import annotations

from typing import Final

from flotilla.node.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from flotilla.node.transport.pb import raftpeer_pb2 as pb

_MESSAGE_TYPES: Final = {t.value: t for t in MessageType}
_ENTRY_TYPES: Final = tuple(EntryType)


class CodecError(ValueError):
    """A wire message that does not describe a valid Raft message."""


def meta_into(meta: SnapshotMeta, out: pb.SnapshotMeta) -> None:
    out.index = meta.index
    out.term = meta.term
    conf = out.conf
    conf.voters.extend(sorted(meta.conf.voters))
    conf.outgoing.extend(sorted(meta.conf.outgoing))
    conf.learners.extend(sorted(meta.conf.learners))


def meta_from_pb(p: pb.SnapshotMeta) -> SnapshotMeta:
    c = p.conf
    conf = ConfState(frozenset(c.voters), frozenset(c.outgoing), frozenset(c.learners))
    return SnapshotMeta(p.index, p.term, conf)


def encode_into(m: Message, out: pb.RaftMessage) -> None:
    """Write ``m`` into the empty wire message ``out`` (snapshot data is not included)."""
    out.type = m.type
    out.to = m.to
    out.frm = m.frm
    if m.term:
        out.term = m.term
    if m.log_term:
        out.log_term = m.log_term
    if m.index:
        out.index = m.index
    if m.commit:
        out.commit = m.commit
    if m.reject:
        out.reject = True
    if m.reject_hint:
        out.reject_hint = m.reject_hint
    if m.context:
        out.context = m.context
    if m.reads:
        out.reads.extend(m.reads)
    if m.entries:
        add = out.entries.add
        for e in m.entries:
            add(term=e.term, index=e.index, type=e.type, data=e.data)
    if m.snapshot is not None:
        meta_into(m.snapshot.meta, out.snapshot)


def to_pb(m: Message) -> pb.RaftMessage:
    out = pb.RaftMessage()
    encode_into(m, out)
    return out


def from_pb(p: pb.RaftMessage) -> Message:
    mtype = _MESSAGE_TYPES.get(p.type)
    if mtype is None:
        raise CodecError(f"unknown message type {p.type}")
    entries = None
    if p.entries:
        types = _ENTRY_TYPES
        try:
            entries = [Entry(e.term, e.index, e.data, types[e.type]) for e in p.entries]
        except IndexError:
            bad = next(e.type for e in p.entries if e.type >= len(types))
            raise CodecError(f"unknown entry type {bad}") from None
    snapshot = Snapshot(meta_from_pb(p.snapshot)) if p.HasField("snapshot") else None
    return Message(
        mtype,
        p.to,
        p.frm,
        p.term,
        log_term=p.log_term,
        index=p.index,
        entries=entries,
        commit=p.commit,
        reject=p.reject,
        reject_hint=p.reject_hint,
        snapshot=snapshot,
        context=p.context,
        reads=tuple(p.reads),
    )
