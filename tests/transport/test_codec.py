"""Every Raft message survives the wire form unchanged."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flotilla.node.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from flotilla.node.transport.codec import (
    ChecksumError,
    CodecError,
    from_pb,
    open_batch,
    seal,
    to_pb,
)
from flotilla.node.transport.pb import raftpeer_pb2 as pb

u64 = st.integers(0, 2**64 - 1)
ids = st.frozensets(st.integers(1, 2**64 - 1), max_size=4)
entries = st.lists(
    st.builds(
        Entry, term=u64, index=u64, data=st.binary(max_size=40), type=st.sampled_from(EntryType)
    ),
    max_size=4,
)
snapshots = st.none() | st.builds(
    lambda index, term, v, o, lrn: Snapshot(SnapshotMeta(index, term, ConfState(v, o, lrn))),
    u64,
    u64,
    ids,
    ids,
    ids,
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=u64,
    frm=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=entries,
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    snapshot=snapshots,
    context=u64,
    reads=st.lists(st.binary(max_size=16), max_size=3).map(tuple),
)


def fields(m: Message) -> tuple[object, ...]:
    return tuple(getattr(m, name) for name in Message.__slots__)


@given(messages)
def test_round_trip_through_the_wire(m: Message) -> None:
    wire = to_pb(m).SerializeToString()
    back = from_pb(pb.RaftMessage.FromString(wire))
    assert fields(back) == fields(m)
    assert type(back.type) is MessageType
    assert all(type(e.type) is EntryType for e in back.entries)


@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_type_with_defaults(mtype: MessageType) -> None:
    m = Message(mtype, 2, 1)
    assert fields(from_pb(pb.RaftMessage.FromString(to_pb(m).SerializeToString()))) == fields(m)


def test_snapshot_data_is_not_part_of_the_message() -> None:
    meta = SnapshotMeta(5, 2, ConfState(frozenset({1})))
    m = Message(MessageType.SNAP, 2, 1, 2, snapshot=Snapshot(meta, b"big state"))
    back = from_pb(to_pb(m))
    assert back.snapshot == Snapshot(meta, None)


def test_unknown_types_are_refused() -> None:
    with pytest.raises(CodecError, match="unknown message type 99"):
        from_pb(pb.RaftMessage(type=99))
    bad_entry = pb.RaftMessage(type=1, entries=[pb.Entry(type=7)])
    with pytest.raises(CodecError, match="unknown entry type 7"):
        from_pb(bad_entry)


@given(st.lists(messages, max_size=5))
def test_a_sealed_batch_opens_to_the_same_messages(ms: list[Message]) -> None:
    wire = seal(7, 1, ms).SerializeToString()
    back = open_batch(pb.MessageBatch.FromString(wire))
    assert [fields(m) for m in back] == [fields(m) for m in ms]


def test_every_flipped_bit_of_a_sealed_batch_is_caught() -> None:
    # An append from a far-future term: taken as whole after damage, a flipped bit in the
    # term could depose a leader, one in the data would write what no client wrote.
    entry = Entry(3, 9, b"put k v", EntryType.NORMAL)
    m = Message(MessageType.APP, 2, 1, 10**6, log_term=3, index=8, entries=[entry], commit=8)
    batch = seal(7, 1, [m])
    payload = batch.payload
    for bit in range(len(payload) * 8):
        damaged = bytearray(payload)
        damaged[bit // 8] ^= 1 << (bit % 8)
        bad = pb.MessageBatch(cluster_id=7, from_id=1, payload=bytes(damaged), crc=batch.crc)
        with pytest.raises(ChecksumError, match=r"checksum \w+ does not match"):
            open_batch(bad)
    with pytest.raises(ChecksumError):
        open_batch(pb.MessageBatch(cluster_id=7, from_id=1, payload=payload, crc=batch.crc ^ 4))
    truncated = pb.MessageBatch(cluster_id=7, from_id=1, payload=payload[:-3], crc=batch.crc)
    with pytest.raises(ChecksumError):
        open_batch(truncated)


def test_a_batch_with_a_good_checksum_but_no_valid_messages_is_refused() -> None:
    junk = b"\xff\xff\xff\x0f junk"
    with pytest.raises(CodecError, match="does not parse"):
        open_batch(pb.MessageBatch(payload=junk, crc=zlib.crc32(junk)))
