"""HPACK (RFC 7541) header block decoding for the client-facing server.

Every request's HEADERS block is decoded. Blocks that repeat byte for byte are served from
a cache in ``h2grpc``, but a client that gives each call a deadline (etcd's clients with a
context timeout, Kubernetes' API server) sends a new ``grpc-timeout`` value every time, and
its encoder adds each to the dynamic table: every later index shifts, so no two blocks
repeat. The ``hpack`` package decodes such a block in about 17 µs (measured; most of it its
generic per-field machinery, not the Huffman code), as much as the rest of a serializable
read costs. This decoder does only what a server needs: fields as ``(name, value)`` bytes,
the dynamic table, its size updates, and the limits.

``generation`` changes whenever the dynamic table does, so a caller can tell whether a
block's meaning could have changed since it last decoded the same bytes.
"""

from __future__ import annotations

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

# Index 0 is not a field: a block that names it is malformed.
_STATIC: tuple[tuple[bytes, bytes], ...] = ((b"", b""), *HeaderTable.STATIC_TABLE)
_STATIC_LAST = len(_STATIC) - 1
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1: an entry's size is its name, its value and 32
_MAX_INT_SHIFT = 28  # integers past 2**28 are nobody's header: refuse, do not loop
_HUFFMAN_CACHE_LIMIT = 1024  # strings
_HUFFMAN_CACHE_LONGEST = 128  # bytes encoded


class HpackError(ValueError):
    """A malformed header block, or one past a limit: the connection's COMPRESSION_ERROR."""


class Decoder:
    """One connection's HPACK decoding context (the peer's encoder's mirror)."""

    __slots__ = (
        "_allowed",
        "_huffman",
        "_max_list",
        "_max_size",
        "_newest_last",
        "_size",
        "generation",
    )

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 64 * 1024) -> None:
        self._allowed = max_table_size  # what our SETTINGS allow the encoder
        self._max_size = max_table_size  # what the encoder last chose, within that
        self._max_list = max_header_list_size
        self._newest_last: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._huffman: dict[bytes, bytes] = {}
        self.generation = 0

    @property
    def table_size(self) -> int:
        """The dynamic table's size as RFC 7541 counts it (32 bytes more per entry)."""
        return self._size

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of one complete header block, in order; raises :class:`HpackError`."""
        out: list[tuple[bytes, bytes]] = []
        listed = 0
        pos = 0
        end = len(block)
        while pos < end:
            b = block[pos]
            if b & 0x80:  # indexed field
                index, pos = _integer(block, pos, 0x7F)
                field = self._field(index)
            elif b & 0x40:  # literal, added to the table
                index, pos = _integer(block, pos, 0x3F)
                field, pos = self._literal(block, pos, index)
                self._add(field)
            elif b & 0x20:  # table size update: only before the first field
                if out:
                    raise HpackError("table size update after a field")
                size, pos = _integer(block, pos, 0x1F)
                if size > self._allowed:
                    raise HpackError(f"table size {size} above the {self._allowed} allowed")
                self._max_size = size
                self._evict()
                self.generation += 1
                continue
            else:  # literal, not added (0000xxxx) or never to be added (0001xxxx)
                index, pos = _integer(block, pos, 0x0F)
                field, pos = self._literal(block, pos, index)
            listed += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if listed > self._max_list:
                raise HpackError(f"header list larger than {self._max_list} bytes")
            out.append(field)
        return out

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _STATIC_LAST:
            return _STATIC[index]
        dynamic = index - _STATIC_LAST
        table = self._newest_last
        if index == 0 or dynamic > len(table):
            raise HpackError(f"no table entry {index}")
        return table[-dynamic]

    def _literal(self, block: bytes, pos: int, index: int) -> tuple[tuple[bytes, bytes], int]:
        if index:
            name = self._field(index)[0]
        else:
            name, pos = self._string(block, pos)
        value, pos = self._string(block, pos)
        return (name, value), pos

    def _string(self, block: bytes, pos: int) -> tuple[bytes, int]:
        if pos >= len(block):
            raise HpackError("block ends before a string")
        huffman = block[pos] & 0x80
        length, pos = _integer(block, pos, 0x7F)
        stop = pos + length
        if stop > len(block):
            raise HpackError("string runs past the end of the block")
        raw = block[pos:stop]
        if not huffman:
            return raw, stop
        # The same short strings come again and again (paths, the authority, timeouts);
        # long ones are not kept, so a client cannot make the cache large.
        text = self._huffman.get(raw)
        if text is None:
            try:
                text = decode_huffman(raw)
            except HPACKDecodingError as err:
                raise HpackError(str(err)) from None
            if length <= _HUFFMAN_CACHE_LONGEST:
                if len(self._huffman) >= _HUFFMAN_CACHE_LIMIT:
                    self._huffman.clear()
                self._huffman[raw] = text
        return text, stop

    def _add(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        self.generation += 1
        if size > self._max_size:
            # Not an error (RFC 7541 §4.4): the table is emptied and the entry not added.
            self._newest_last.clear()
            self._size = 0
            return
        self._newest_last.append(field)
        self._size += size
        self._evict()

    def _evict(self) -> None:
        table = self._newest_last
        while self._size > self._max_size:
            name, value = table.pop(0)
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(block: bytes, pos: int, mask: int) -> tuple[int, int]:
    """The integer at ``pos`` with a prefix of ``mask``'s bits (RFC 7541 §5.1)."""
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(block)
    while True:
        if pos >= end:
            raise HpackError("block ends inside an integer")
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > _MAX_INT_SHIFT:
            raise HpackError("integer too large")
