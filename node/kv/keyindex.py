"""The in-memory index from user keys to the revisions at which they changed.

The index answers "which keys exist in [key, range_end) at revision R, and which record holds
each one's value" without touching LevelDB, and it holds the live metadata of every key
(create revision, version, lease) so that a Put or a txn Compare needs no disk read. It is
rebuilt from the revision records when the store opens; LevelDB holds only the records.

A revision is packed into one int: ``main << 33 | sub << 1 | tombstone``. Packed entries sort
exactly like (main, sub) pairs, so a key's history is a plain ascending list searched with
``bisect``, and the low bit tells a deletion from a put without another lookup.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

from sortedcontainers import SortedList

MAX_SUB: Final = (1 << 32) - 1


def pack(main: int, sub: int, tombstone: bool = False) -> int:
    """Pack a revision (and whether it is a deletion) into one sortable int."""
    return (main << 33) | (sub << 1) | int(tombstone)


def main_of(entry: int) -> int:
    return entry >> 33


def sub_of(entry: int) -> int:
    return (entry >> 1) & MAX_SUB


def is_tombstone(entry: int) -> bool:
    return bool(entry & 1)


def upper_bound(rev: int) -> int:
    """The smallest packed entry whose main revision is greater than ``rev``."""
    return (rev + 1) << 33


class KeyIndex:
    """One key's history (packed revisions, ascending) and its live metadata.

    ``create``, ``version`` and ``lease`` describe the latest generation and are zero while the
    key is deleted; older states are read from the records themselves.
    """

    __slots__ = ("create", "lease", "revs", "version")

    def __init__(self) -> None:
        self.revs: list[int] = []
        self.create = 0
        self.version = 0
        self.lease = 0

    @property
    def live(self) -> bool:
        """Whether the key exists at the newest revision."""
        revs = self.revs
        return bool(revs) and not revs[-1] & 1

    def put(self, main: int, sub: int, create: int, version: int, lease: int) -> None:
        self._add(pack(main, sub))
        self.create = create
        self.version = version
        self.lease = lease

    def tombstone(self, main: int, sub: int) -> None:
        self._add(pack(main, sub, True))
        self.create = 0
        self.version = 0
        self.lease = 0

    def _add(self, entry: int) -> None:
        if self.revs:
            self.revs.append(entry)
        else:
            # Most keys have one revision: a one-element list is 24 bytes smaller than an
            # empty one appended to (which reserves room for four), 24 MB per million keys.
            self.revs = [entry]

    def entry_at(self, rev: int) -> int | None:
        """The packed put entry visible at main revision ``rev``, or None if absent then."""
        revs = self.revs
        i = bisect_left(revs, upper_bound(rev)) - 1
        if i < 0:
            return None
        entry = revs[i]
        return None if entry & 1 else entry

    def previous(self, entry: int) -> int | None:
        """The put entry directly before ``entry`` in the same generation, if still kept."""
        revs = self.revs
        i = bisect_left(revs, entry) - 1
        if i < 0:
            return None
        prev = revs[i]
        return None if prev & 1 else prev

    def compact(self, rev: int) -> list[int]:
        """Drop history that no read at a revision >= ``rev`` can see; return dropped entries.

        The newest entry at or below ``rev`` is kept if it is a put (it is the key's value at
        ``rev``) and dropped if it is a deletion (the key did not exist at ``rev``).
        """
        revs = self.revs
        i = bisect_left(revs, upper_bound(rev)) - 1
        if i < 0:
            return []
        cut = i + 1 if revs[i] & 1 else i
        dropped = revs[:cut]
        del revs[:cut]
        return dropped


class TreeIndex:
    """All keys that have history, in byte order, each with its :class:`KeyIndex`."""

    __slots__ = ("_keys", "_map")

    def __init__(self) -> None:
        self._map: dict[bytes, KeyIndex] = {}
        self._keys = SortedList()

    def __len__(self) -> int:
        return len(self._map)

    def get(self, key: bytes) -> KeyIndex | None:
        return self._map.get(key)

    def get_or_create(self, key: bytes) -> KeyIndex:
        ki = self._map.get(key)
        if ki is None:
            ki = self._map[key] = KeyIndex()
            self._keys.add(key)
        return ki

    def get_or_create_unordered(self, key: bytes) -> KeyIndex:
        """:meth:`get_or_create` for bulk loads: call :meth:`reorder` once at the end.

        Sorting all keys once is far cheaper than inserting each into the sorted list.
        """
        ki = self._map.get(key)
        if ki is None:
            ki = self._map[key] = KeyIndex()
        return ki

    def reorder(self) -> None:
        """Rebuild the key order after :meth:`get_or_create_unordered` calls."""
        self._keys = SortedList(self._map)

    def remove(self, key: bytes) -> None:
        del self._map[key]
        self._keys.remove(key)

    def keys(self, key: bytes, range_end: bytes) -> Iterable[bytes]:
        """Keys with history in the request range, in ascending order.

        etcd's conventions: an empty ``range_end`` means just ``key``; ``b"\\0"`` means every
        key >= ``key``; otherwise the half-open interval [key, range_end).
        """
        if not range_end:
            return (key,) if key in self._map else ()
        keys: Iterable[bytes]
        if range_end == b"\x00":
            keys = self._keys.irange(key, None)
        elif range_end <= key:
            keys = ()
        else:
            keys = self._keys.irange(key, range_end, inclusive=(True, False))
        return keys

    def visible(self, key: bytes, range_end: bytes, rev: int | None) -> list[tuple[bytes, int]]:
        """``(key, packed put entry)`` of every key in the range that exists at ``rev``.

        ``rev`` None means the newest revision, the common case, which needs no search.
        """
        m = self._map
        out: list[tuple[bytes, int]] = []
        append = out.append
        if rev is None:
            for k in self.keys(key, range_end):
                last = m[k].revs[-1]
                if not last & 1:
                    append((k, last))
        else:
            bound = upper_bound(rev)
            for k in self.keys(key, range_end):
                revs = m[k].revs
                i = bisect_left(revs, bound) - 1
                if i >= 0 and not revs[i] & 1:
                    append((k, revs[i]))
        return out

    def items(self, key: bytes, range_end: bytes) -> Iterator[tuple[bytes, KeyIndex]]:
        m = self._map
        for k in self.keys(key, range_end):
            yield k, m[k]

    def all_items(self) -> Iterator[tuple[bytes, KeyIndex]]:
        m = self._map
        for k in self._keys:
            yield k, m[k]
