"""How a member opens its LevelDB: one place for the options every opener must share."""

from __future__ import annotations

from pathlib import Path

import plyvel

# No block compression. Keys are short and values are whatever clients store (often already
# compressed, or random); under the write benchmark Snappy took half of LevelDB's background
# thread, about 2.7 us per write on every member, for no saving on such values. Blocks
# written by an earlier version stay readable: each block records its own compression.
COMPRESSION = None

# LevelDB's default memtable is 4 MiB. Every write puts a log entry that is deleted again
# once a snapshot covers it, so a larger memtable means fewer level-0 files and fewer
# compactions rewriting records that are already gone, for at most two memtables of memory.
WRITE_BUFFER_SIZE = 16 << 20


def open_db(path: Path) -> plyvel.DB:
    """Open (creating if missing) the member's LevelDB at ``path``."""
    return plyvel.DB(
        str(path),
        create_if_missing=True,
        compression=COMPRESSION,
        write_buffer_size=WRITE_BUFFER_SIZE,
    )


# Every key a member writes starts with an ASCII prefix, so these two bound them all.
_LOWEST, _HIGHEST = b"\x00", b"\xfe"


def compact_all(db: plyvel.DB) -> None:
    """Rewrite the tables so that the space of deleted and overwritten records comes back.

    LevelDB's manual compaction flushes the memtable first and puts the new table at the
    deepest level its key range does not overlap; then it only merges each level into the
    next. A table that landed at the bottom (all of a small database, which had never left
    the memtable) is never merged again and keeps every record deletions hid (measured). So:
    flush the memtable on its own, then flush a table of two deletions that bound every key.
    That table overlaps every other and so lands above them all, and the merges of the
    whole key range carry every record down through it. (A closed range, too: LevelDB's
    compaction of one open at the end leaves the hidden records on disk.)
    """
    db.compact_range(start=_LOWEST, stop=_LOWEST)
    with db.write_batch() as batch:
        batch.delete(_LOWEST)
        batch.delete(_HIGHEST)
    db.compact_range(start=_LOWEST, stop=b"\xff")
