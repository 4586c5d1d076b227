"""RaftStorage: the Raft log, hard state and snapshots of one member, durable on LevelDB.

The driver hands each ``Ready`` to :meth:`RaftStorage.stage`, which puts everything it asks to
persist into the caller's write batch; the caller adds the state machine's changes and writes
the batch once with ``sync=True``: one fsync per turn however many proposals it carries.

The stored entry range ``[first_index, last_index]`` is kept in memory and updated as batches
are staged, so truncating a conflicting suffix or compacting a prefix deletes keys by index
without scanning. That is only true if every staged batch is written: a batch that is
discarded instead leaves memory ahead of the disk, and the storage must be reopened.

Everything read back is verified (per-record CRC-32, contiguous indexes, SHA-256 of snapshot
files); damage raises :class:`CorruptDataError` rather than returning wrong data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from flotilla.node.raft.core import InitialState
from flotilla.node.raft.types import EMPTY_CONF, Entry, HardState, Ready, SnapshotMeta
from flotilla.node.storage import codec, snapfile
from flotilla.node.storage.codec import (
    ENTRY_PREFIX,
    ENTRY_PREFIX_END,
    HARD_STATE_KEY,
    SNAPSHOT_KEY,
    RecordError,
)
from flotilla.node.storage.errors import CorruptDataError

_SNAP_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_NO_SNAPSHOT = SnapshotMeta(0, 0, EMPTY_CONF)
T = TypeVar("T")


class WriteBatch(Protocol):
    """The part of ``plyvel.WriteBatch`` the storage uses."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


def snapshot_name(meta: SnapshotMeta) -> str:
    return f"{meta.term:016x}-{meta.index:016x}.snap"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RaftStorage:
    def __init__(self, db: Any, snap_dir: Path) -> None:
        self._db = db
        self._snap_dir = snap_dir
        snap_dir.mkdir(parents=True, exist_ok=True)
        name = getattr(db, "name", None)
        self._data_dir = str(Path(name).parent) if name else str(snap_dir.parent)
        self._snapshot: SnapshotMeta = self._read(SNAPSHOT_KEY, codec.decode_meta, _NO_SNAPSHOT)
        self._first, self._last = self._stored_range()

    # == queries ===============================================================================

    @property
    def data_dir(self) -> str:
        return self._data_dir

    @property
    def snapshot(self) -> SnapshotMeta:
        """Metadata of the latest snapshot recorded (staged) in the database."""
        return self._snapshot

    @property
    def first_index(self) -> int:
        """The first stored entry; greater than ``last_index`` when none is stored."""
        return self._first

    @property
    def last_index(self) -> int:
        """The last stored entry, or the snapshot index when no entry follows it."""
        snap_index: int = self._snapshot.index
        return max(self._last, snap_index)

    def load(self) -> InitialState:
        """Read back the hard state, the snapshot metadata and every entry after it.

        ``applied`` is left ``None``: the state machine knows where it stands.
        """
        hs = self._read(HARD_STATE_KEY, codec.decode_hard_state, HardState())
        snap = self._snapshot
        entries: list[Entry] = []
        append = entries.append
        decode = codec.decode_entry
        expect = snap.index + 1
        start = codec.entry_key(expect)
        for key, value in self._db.iterator(start=start, stop=ENTRY_PREFIX_END):
            try:
                index = codec.key_index(key)
                if index != expect:
                    raise RecordError(f"log gap: expected entry {expect}, found {index}")
                append(decode(index, value))
            except RecordError as exc:
                raise self._corrupt(key, exc) from exc
            expect += 1
        last = expect - 1
        if hs.commit > last:
            raise CorruptDataError(
                f"hard state commit index {hs.commit} is beyond the last stored entry {last} "
                f"in data dir {self._data_dir}: entries were lost"
            )
        return InitialState(hard_state=hs, snapshot=snap, entries=entries)

    # == staging writes ========================================================================

    def stage(self, batch: WriteBatch, rd: Ready) -> None:
        """Put into ``batch`` everything ``rd`` asks to persist.

        A snapshot in ``rd`` replaces the whole log; the caller puts the state it names
        into the same batch. New entries replace any stored ones at or after the first
        of them (Raft truncation of a conflicting suffix).
        """
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            batch.put(SNAPSHOT_KEY, codec.encode_meta(meta))
            self._delete(batch, self._first, self._last)
            self._snapshot = meta
            self._first, self._last = meta.index + 1, meta.index
        ents = rd.entries
        if ents:
            start = ents[0].index
            if start <= self._snapshot.index or start > self.last_index + 1:
                raise ValueError(
                    f"entries from {start} do not continue the log "
                    f"(snapshot {self._snapshot.index}, last {self.last_index})"
                )
            put = batch.put
            prefix = ENTRY_PREFIX
            pack = codec.pack_index
            encode = codec.encode_entry
            for e in ents:
                put(prefix + pack(e.index), encode(e))
            new_last = ents[-1].index
            self._delete(batch, new_last + 1, self._last)
            if self._first > self._last:
                self._first = start
            self._last = new_last
        if rd.hard_state is not None:
            batch.put(HARD_STATE_KEY, codec.encode_hard_state(rd.hard_state))

    def record_snapshot(self, batch: WriteBatch, meta: SnapshotMeta) -> None:
        """Record a snapshot this member made itself (``RaftCore.create_snapshot``).

        The state it names is the state machine's, durable in the same database (the
        record's synced write makes every earlier apply durable); :meth:`compact` may then
        drop the entries it covers. A founding member records its bootstrap configuration
        (the snapshot at index 0) this way too. (Snapshot files remain for a restored
        member's first snapshot and for data directories of earlier versions.)
        """
        if meta.index >= self._snapshot.index:
            batch.put(SNAPSHOT_KEY, codec.encode_meta(meta))
            self._snapshot = meta

    def compact(self, batch: WriteBatch, index: int) -> None:
        """Delete the entries up to ``index``, which a recorded snapshot must cover."""
        if index > self._snapshot.index:
            raise ValueError(f"compact to {index} beyond the snapshot at {self._snapshot.index}")
        if index < self._first:
            return
        self._delete(batch, self._first, min(index, self._last))
        self._first = index + 1
        self._last = max(self._last, index)

    def _delete(self, batch: WriteBatch, first: int, last: int) -> None:
        delete = batch.delete
        prefix = ENTRY_PREFIX
        pack = codec.pack_index
        for index in range(first, last + 1):
            delete(prefix + pack(index))

    # == snapshot files ========================================================================

    def save_snapshot(self, meta: SnapshotMeta, data: bytes | Iterable[bytes]) -> Path:
        """Write a snapshot file atomically: a crash leaves the old file or the new one."""
        path = self._snap_dir / snapshot_name(meta)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as out:
            snapfile.write(out, meta, data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(self._snap_dir)
        return path

    def read_snapshot(self, path: Path) -> tuple[SnapshotMeta, bytes]:
        """Read and verify a snapshot file."""
        try:
            meta, body = snapfile.parse(path.read_bytes())
        except RecordError as exc:
            raise CorruptDataError(
                f"snapshot file {path} in data dir {self._data_dir}: {exc}"
            ) from exc
        m = _SNAP_NAME.match(path.name)
        if m and (int(m.group(1), 16), int(m.group(2), 16)) != (meta.term, meta.index):
            raise CorruptDataError(
                f"snapshot file {path} holds snapshot {meta.term}/{meta.index}, "
                f"not the one its name says"
            )
        return meta, body

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The recorded snapshot with its data, or ``None`` if there is none yet.

        Suits the transport's ``snapshot_source``: the file is the one the log refers to.
        """
        if self._snapshot.index == 0:
            return None
        return self.read_snapshot(self._snap_dir / snapshot_name(self._snapshot))

    def _snapshot_files(self) -> list[tuple[int, int, Path]]:
        found = []
        for path in self._snap_dir.iterdir():
            m = _SNAP_NAME.match(path.name)
            if m:
                found.append((int(m.group(2), 16), int(m.group(1), 16), path))
        found.sort()
        return found

    def latest_snapshot_path(self) -> Path | None:
        files = self._snapshot_files()
        return files[-1][2] if files else None

    def purge_snapshots(self, keep: int = 2) -> None:
        """Delete all but the newest ``keep`` snapshot files, and leftovers of crashed saves.

        The file of the recorded snapshot is always kept: the log depends on it.
        """
        files = self._snapshot_files()
        recorded = snapshot_name(self._snapshot)
        for _, _, path in files[: max(0, len(files) - keep)]:
            if path.name != recorded:
                path.unlink(missing_ok=True)
        for path in self._snap_dir.glob("*.snap.tmp"):
            path.unlink(missing_ok=True)

    # == helpers ===============================================================================

    def _stored_range(self) -> tuple[int, int]:
        it = self._db.iterator(start=ENTRY_PREFIX, stop=ENTRY_PREFIX_END, include_value=False)
        try:
            first_key = next(it, None)
        finally:
            it.close()
        if first_key is None:
            return self._snapshot.index + 1, self._snapshot.index
        it = self._db.iterator(
            start=ENTRY_PREFIX, stop=ENTRY_PREFIX_END, include_value=False, reverse=True
        )
        try:
            last_key = next(it)
        finally:
            it.close()
        try:
            return codec.key_index(first_key), codec.key_index(last_key)
        except RecordError as exc:
            raise self._corrupt(first_key, exc) from exc

    def _read(self, key: bytes, decode: Callable[[bytes], T], default: T) -> T:
        raw = self._db.get(key)
        if raw is None:
            return default
        try:
            return decode(raw)
        except RecordError as exc:
            raise self._corrupt(key, exc) from exc

    def _corrupt(self, key: bytes, exc: RecordError) -> CorruptDataError:
        what = f"record {key!r}"
        if key.startswith(ENTRY_PREFIX) and len(key) == 12:
            what = f"log entry {int.from_bytes(key[4:], 'big')} ({what})"
        return CorruptDataError(f"corrupt {what} in data dir {self._data_dir}: {exc}")
