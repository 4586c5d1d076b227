"""SyncWriter runs a member's synced writes in order on its own thread, errors included."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest

from flotilla.node.storage.writer import SyncWriter


@pytest.fixture
def db(tmp_path: Path) -> Iterator[plyvel.DB]:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    yield db
    db.close()


@pytest.fixture
def writer() -> Iterator[SyncWriter]:
    w = SyncWriter()
    yield w
    w.close()


def test_writes_run_in_order_off_the_loop_and_are_on_disk_when_awaited(
    db: plyvel.DB, writer: SyncWriter
) -> None:
    threads: list[str] = []

    def put(i: int) -> None:
        threads.append(threading.current_thread().name)
        db.put(b"k", str(i).encode(), sync=True)

    async def main() -> None:
        pending = [writer.run(lambda i=i: put(i)) for i in range(50)]
        await asyncio.gather(*pending)
        assert db.get(b"k") == b"49", "the last write handed over was not the last applied"

    asyncio.run(main())
    assert len(threads) == 50
    assert set(threads) == {"flotilla-sync-writer"}, "a write ran on another thread"


def test_an_error_reaches_the_waiter_and_the_writer_goes_on(
    db: plyvel.DB, writer: SyncWriter
) -> None:
    def fail() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        with pytest.raises(OSError, match="No space left"):
            await writer.run(fail)
        await writer.run(lambda: db.put(b"after", b"1", sync=True))

    asyncio.run(main())
    assert db.get(b"after") == b"1"


def test_a_cancelled_wait_does_not_stop_the_write_nor_the_writer(
    db: plyvel.DB, writer: SyncWriter
) -> None:
    release = threading.Event()

    def slow() -> None:
        release.wait(5)
        db.put(b"slow", b"1", sync=True)

    async def main() -> None:
        waiting = writer.run(slow)
        waiting.cancel()
        release.set()
        await writer.run(lambda: None)  # runs after the slow one: it finished meanwhile

    asyncio.run(main())
    assert db.get(b"slow") == b"1"


def test_close_ends_the_thread_after_the_writes_handed_over() -> None:
    writer = SyncWriter(name="closing-writer")
    thread = next(t for t in threading.enumerate() if t.name == "closing-writer")
    done: list[int] = []

    async def main() -> None:
        writer.run(lambda: done.append(1))
        writer.close()

    asyncio.run(main())
    thread.join(5)
    assert not thread.is_alive(), "the writer's thread did not end after close"
    assert done == [1]


def test_the_wait_ends_with_the_seconds_the_call_itself_took(writer: SyncWriter) -> None:
    """What the fsync metric records: the call's own time, without the hand-offs around it
    (and without whatever the loop did meanwhile)."""

    async def main() -> tuple[float, float]:
        started = time.perf_counter()
        waiting = writer.run(lambda: time.sleep(0.05))  # the call being timed, not a wait
        time.sleep(0.1)  # the loop busy meanwhile: not the call's time
        took = await waiting
        return took, time.perf_counter() - started

    took, waited = asyncio.run(main())
    assert 0.05 <= took < 0.1, f"the call took {took:.3f} s by the writer's clock"
    assert waited >= 0.1
