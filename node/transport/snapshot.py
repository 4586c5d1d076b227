"""Streaming a snapshot between members: chunking with a checksum, and verified reassembly.

A snapshot can be far larger than a gRPC message, so it travels as a stream of chunks
(1 MiB by default). The first chunk carries the MsgSnap message with the metadata; the last
carries the SHA-256 of all the data. The receiver delivers the snapshot to its node only
after the checksum matched: a damaged snapshot installed by Raft would silently replace a
member's whole state.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import grpc

from flotilla.node.raft.types import Message, MessageType, Snapshot, SnapshotMeta
from flotilla.node.transport.codec import CodecError, from_pb
from flotilla.node.transport.pb import raftpeer_pb2 as pb

DEFAULT_CHUNK_SIZE = 1 << 20


class SnapshotRejected(Exception):
    """An incoming snapshot stream that must not be delivered; carries the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Streamed:
    """Snapshot data made while it is sent: its length, known first, and its bytes in pieces
    of any size, taken one at a time in a worker thread (reading and serializing a large
    store takes a while; the receiver reads the first pieces meanwhile)."""

    size: int
    pieces: Iterator[bytes]


def chunks(
    cluster_id: int,
    from_id: int,
    header: pb.RaftMessage,
    data: bytes | Streamed,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[pb.SnapshotChunk]:
    """The chunk stream of one snapshot; ``header`` is the MsgSnap with its metadata.

    Raises RuntimeError if streamed data does not add up to the size it announced: the
    receiver would wait for bytes that never come, or take the wrong ones as the last.
    """
    if not isinstance(data, Streamed):
        data = Streamed(len(data), iter((data,)))
    digest = hashlib.sha256()
    sent = 0
    first = True
    for piece in _cut(data.pieces, chunk_size):
        sent += len(piece)
        if sent > data.size:
            raise RuntimeError(f"snapshot data runs past its announced {data.size} bytes")
        digest.update(piece)
        chunk = pb.SnapshotChunk(cluster_id=cluster_id, from_id=from_id, data=piece)
        if first:
            chunk.header.CopyFrom(header)
            first = False
        if sent == data.size:
            chunk.last = True
            chunk.checksum = digest.digest()
        yield chunk
    if first and data.size == 0:
        chunk = pb.SnapshotChunk(cluster_id=cluster_id, from_id=from_id, last=True)
        chunk.header.CopyFrom(header)
        chunk.checksum = digest.digest()
        yield chunk
    elif sent != data.size:
        raise RuntimeError(f"snapshot data ended at {sent} of its announced {data.size} bytes")


def _cut(pieces: Iterator[bytes], size: int) -> Iterator[bytes]:
    """The bytes of ``pieces`` re-cut into pieces of ``size`` (the last may be shorter)."""
    buf = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        pos = 0
        if buf:
            pos = min(len(view), size - len(buf))
            buf += view[:pos]
            if len(buf) < size:
                continue
            yield bytes(buf)
            buf.clear()
        while len(view) - pos >= size:
            yield bytes(view[pos : pos + size])
            pos += size
        buf += view[pos:]
    if buf:
        yield bytes(buf)


class Sink(Protocol):
    """What a receiver reads a snapshot into as it arrives (its state machine's loader).

    ``feed`` takes each chunk's data in order, ``finish`` is called once the whole stream's
    checksum matched. Either raises an error carrying a gRPC status ``code`` (as the store's
    errors do) for data it cannot install; the stream is then refused with that status.
    """

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


async def receive(
    stream: AsyncIterator[pb.SnapshotChunk],
    cluster_id: int,
    sink: Callable[[], Sink] | None = None,
) -> tuple[Message, int]:
    """Reassemble and verify a chunk stream into the MsgSnap to deliver, data attached;
    also the number of bytes received.

    With ``sink``, each chunk's data is read into a new sink instead, as it arrives, and the
    snapshot is delivered with it as ``loaded`` (and empty ``data``): the state machine's
    reading is then done by the time the last chunk is in.
    """
    header: Message | None = None
    meta: SnapshotMeta | None = None
    parts: list[bytes] = []
    size = 0
    digest = hashlib.sha256()
    sender = 0
    loading = sink() if sink is not None else None
    async for chunk in stream:
        if chunk.cluster_id != cluster_id:
            raise SnapshotRejected(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"snapshot from member {chunk.from_id:x} of cluster {chunk.cluster_id:x} "
                f"refused by a member of cluster {cluster_id:x}",
            )
        if header is None:
            if not chunk.HasField("header"):
                raise SnapshotRejected(
                    grpc.StatusCode.INVALID_ARGUMENT, "first snapshot chunk carries no header"
                )
            try:
                header = from_pb(chunk.header)
            except CodecError as exc:
                raise SnapshotRejected(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
            if header.type != MessageType.SNAP or header.snapshot is None:
                raise SnapshotRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"snapshot header must be a SNAP message with metadata, not {header!r}",
                )
            sender = chunk.from_id
            meta = header.snapshot.meta
        size += len(chunk.data)
        digest.update(chunk.data)
        if loading is None:
            parts.append(chunk.data)
        else:
            with _refused_if_bad(meta, sender):
                loading.feed(chunk.data)
        if chunk.last and header is not None and meta is not None:
            if chunk.checksum != digest.digest():
                raise SnapshotRejected(
                    grpc.StatusCode.DATA_LOSS,
                    f"snapshot {meta.term}/{meta.index} from member {sender:x}: "
                    f"checksum mismatch, snapshot discarded",
                )
            if loading is not None:
                with _refused_if_bad(meta, sender):
                    loading.finish()
            header.snapshot = Snapshot(meta, b"".join(parts), loading)
            return header, size
    raise SnapshotRejected(grpc.StatusCode.DATA_LOSS, "snapshot stream ended before its last chunk")


@contextlib.contextmanager
def _refused_if_bad(meta: SnapshotMeta | None, sender: int) -> Iterator[None]:
    """Around a sink's step: an error with a gRPC status refuses the stream with it."""
    try:
        yield
    except Exception as exc:
        code = getattr(exc, "code", None)
        if not isinstance(code, grpc.StatusCode):
            raise
        which = f"{meta.term}/{meta.index}" if meta is not None else "?"
        raise SnapshotRejected(
            code, f"snapshot {which} from member {sender:x}: {exc}, snapshot discarded"
        ) from exc
