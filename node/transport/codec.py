"""Raft messages to and from their wire form (``RaftMessage`` of ``raftpeer.proto``).

This is the hot path: every message a member sends or receives passes here once. Encoding
fills a message in place (``encode_into``) so a batch's messages are built inside the batch
rather than built and then copied into it; fields at their default are left unset (one
attribute store fewer each, and nothing on the wire); entries are added with the repeated
field's ``add`` and enums are looked up in tables, not called.

Snapshot data never travels in a ``RaftMessage``: only the metadata does, the data is streamed
in chunks (see ``snapshot``).

A batch of messages travels sealed: serialized once into ``MessageBatch.payload`` with a CRC-32
beside it, and checked before it is parsed (``seal`` and ``open_batch``). Serializing the inner
messages ourselves costs what gRPC would otherwise have spent on them, plus one pass of zlib's
CRC over the bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final

from google.protobuf.message import DecodeError

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


class ChecksumError(CodecError):
    """A batch whose bytes are not the ones its sender checksummed: damaged on the way."""


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


def seal(cluster_id: int, from_id: int, messages: Iterable[Message]) -> pb.MessageBatch:
    """One batch carrying ``messages``, serialized and checksummed."""
    inner = pb.RaftMessages()
    add = inner.messages.add
    for m in messages:
        encode_into(m, add())
    payload = inner.SerializeToString()
    return pb.MessageBatch(
        cluster_id=cluster_id, from_id=from_id, payload=payload, crc=zlib.crc32(payload)
    )


def open_batch(batch: pb.MessageBatch) -> list[Message]:
    """The messages of a sealed batch; ``ChecksumError`` if it was damaged on the way."""
    payload = batch.payload
    got = zlib.crc32(payload)
    if got != batch.crc:
        raise ChecksumError(
            f"batch of {len(payload)} bytes from member {batch.from_id:x}: checksum "
            f"{got:08x} does not match the sender's {batch.crc:08x}, batch discarded"
        )
    try:
        inner = pb.RaftMessages.FromString(payload)
    except DecodeError as exc:
        raise CodecError(f"batch from member {batch.from_id:x} does not parse: {exc}") from exc
    return [from_pb(p) for p in inner.messages]
