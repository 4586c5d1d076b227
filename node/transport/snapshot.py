"""Streaming a snapshot between members: chunking with a checksum, and verified reassembly.

A snapshot can be far larger than a gRPC message, so it travels as a stream of chunks
(1 MiB by default). The first chunk carries the MsgSnap message with the metadata; the last
carries the SHA-256 of all the data. The receiver delivers the snapshot to its node only
after the checksum matched: a damaged snapshot installed by Raft would silently replace a
member's whole state.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator

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


def chunks(
    cluster_id: int,
    from_id: int,
    header: pb.RaftMessage,
    data: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[pb.SnapshotChunk]:
    """The chunk stream of one snapshot; ``header`` is the MsgSnap with its metadata."""
    view = memoryview(data)
    digest = hashlib.sha256()
    pos = 0
    first = True
    while True:
        piece = bytes(view[pos : pos + chunk_size])
        pos += len(piece)
        digest.update(piece)
        chunk = pb.SnapshotChunk(cluster_id=cluster_id, from_id=from_id, data=piece)
        if first:
            chunk.header.CopyFrom(header)
            first = False
        if pos >= len(data):
            chunk.last = True
            chunk.checksum = digest.digest()
            yield chunk
            return
        yield chunk


async def receive(stream: AsyncIterator[pb.SnapshotChunk], cluster_id: int) -> Message:
    """Reassemble and verify a chunk stream into the MsgSnap to deliver, data attached."""
    header: Message | None = None
    meta: SnapshotMeta | None = None
    parts: list[bytes] = []
    digest = hashlib.sha256()
    sender = 0
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
        parts.append(chunk.data)
        digest.update(chunk.data)
        if chunk.last and header is not None and meta is not None:
            if chunk.checksum != digest.digest():
                raise SnapshotRejected(
                    grpc.StatusCode.DATA_LOSS,
                    f"snapshot {meta.term}/{meta.index} from member {sender:x}: "
                    f"checksum mismatch, snapshot discarded",
                )
            header.snapshot = Snapshot(meta, b"".join(parts))
            return header
    raise SnapshotRejected(grpc.StatusCode.DATA_LOSS, "snapshot stream ended before its last chunk")
