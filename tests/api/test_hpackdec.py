"""The server's HPACK decoder: RFC 7541's examples, agreement with the ``hpack`` package on
what its encoder writes, and malformed blocks refused."""

from __future__ import annotations

import random

import hpack
import pytest

from flotilla.node.api.hpackdec import Decoder, HpackError

# RFC 7541 Appendix C.4: three requests on one connection, Huffman-coded, with the
# dynamic table's size after each.
RFC_C4 = [
    (
        "828684418cf1e3c2e5f23a6ba0ab90f4ff",
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
         (b":authority", b"www.example.com")],
        57,
    ),
    (
        "828684be5886a8eb10649cbf",
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
         (b":authority", b"www.example.com"), (b"cache-control", b"no-cache")],
        110,
    ),
    (
        "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/index.html"),
         (b":authority", b"www.example.com"), (b"custom-key", b"custom-value")],
        164,
    ),
]  # fmt: skip


def test_the_rfc_examples_decode_with_their_table_sizes() -> None:
    dec = Decoder()
    for hexed, fields, size in RFC_C4:
        assert dec.decode(bytes.fromhex(hexed)) == fields
        assert dec.table_size == size


def _headers(rng: random.Random, pool: list[tuple[str, str]]) -> list[object]:
    """A request's header list: gRPC's usual fields, some repeated from earlier requests,
    some new, a deadline that differs every time, now and then a field never to index."""
    out: list[object] = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", rng.choice(["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn", "/x/" + "y" * 40])),
        (":authority", "127.0.0.1:2379"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", f"{rng.randrange(1, 10**8)}u"),
    ]
    for _ in range(rng.randrange(4)):
        if pool and rng.random() < 0.6:
            out.append(rng.choice(pool))
        else:
            field = (f"x-{rng.randrange(1000)}", "v" * rng.choice([0, 1, 10, 200, 3000]))
            pool.append(field)
            out.append(field)
    if rng.random() < 0.2:
        out.append(hpack.HeaderTuple("authorization", "secret"))
        out.append(hpack.NeverIndexedHeaderTuple("authorization", f"secret-{rng.random()}"))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_the_hpack_package_block_after_block(seed: int) -> None:
    """Thousands of blocks on one connection, as the ``hpack`` encoder writes them: indexed
    and literal fields, Huffman or not, entries larger than the table, table size updates."""
    rng = random.Random(seed)
    enc = hpack.Encoder()
    reference = hpack.Decoder(max_header_list_size=1 << 20)
    dec = Decoder(max_header_list_size=1 << 20)
    pool: list[tuple[str, str]] = []
    for _ in range(2000):
        if rng.random() < 0.02:
            enc.header_table_size = rng.choice([0, 100, 1000, 4096])
        block = enc.encode(_headers(rng, pool), huffman=rng.random() < 0.8)
        want = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        assert dec.decode(block) == want
        assert dec.table_size == reference.header_table._current_size


def test_the_generation_moves_exactly_when_the_table_does() -> None:
    enc = hpack.Encoder()
    dec = Decoder()
    first = enc.encode([(":path", "/a/A"), ("x-k", "1")])  # adds both
    again = enc.encode([(":path", "/a/A"), ("x-k", "1")])  # two indexes
    unindexed = enc.encode([hpack.NeverIndexedHeaderTuple("x-s", "2")])
    dec.decode(first)
    moved = dec.generation
    dec.decode(again)
    dec.decode(unindexed)
    assert dec.generation == moved
    dec.decode(enc.encode([("x-new", "3")]))
    assert dec.generation > moved


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\x80", "index 0"),
        (b"\xbf", "no table entry 63 in an empty table"),
        (b"\xff\xff\xff\xff\xff\xff\x7f", "an integer past 2**28"),
        (b"\xff", "a block that ends inside an integer"),
        (b"\x40\x85abc", "a name that runs past the end"),
        (b"\x40", "a literal with no name"),
        (b"\x00\x01a\x81\xff", "a Huffman string ending in a full byte of padding"),
        (b"\x3f\xe2\x1f", "a table size update to 4,097, above the 4,096 allowed"),
        (b"\x82\x20", "a table size update after a field"),
    ],
)
def test_malformed_blocks_are_refused(block: bytes, why: str) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block)


def test_a_header_list_past_the_limit_is_refused() -> None:
    enc = hpack.Encoder()
    big = enc.encode([("x-big", "v" * 2000)] * 3)
    with pytest.raises(HpackError, match="larger than 4096"):
        Decoder(max_header_list_size=4096).decode(big)


def test_random_bytes_are_refused_where_the_hpack_package_refuses_them() -> None:
    """Garbage gets an error or the same fields as the reference decoder, never others."""
    rng = random.Random(7)
    for _ in range(20000):
        block = rng.randbytes(rng.randrange(1, 24))
        reference = hpack.Decoder()
        try:
            want = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        except hpack.HPACKError:
            want = None
        try:
            got = Decoder().decode(block)
        except HpackError:
            got = None
        assert got == want, block.hex()


def test_long_strings_are_decoded_but_not_kept() -> None:
    """The cache of decoded Huffman strings holds short ones only: a client sending ever new
    long values must not make a connection's memory grow with them."""
    enc = hpack.Encoder()
    dec = Decoder()
    for i in range(300):
        value = f"{i:04d}" + "a" * 400
        block = enc.encode([hpack.NeverIndexedHeaderTuple("x-long", value)], huffman=True)
        assert dec.decode(block) == [(b"x-long", value.encode())]
    # Only the name, short and the same every time, is kept.
    assert set(dec._huffman.values()) == {b"x-long"}, "long strings were kept"
