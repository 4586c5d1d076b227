"""Run inside a network namespace by ``test_transport``: a stream to a peer by a name that
resolves only later, as a learner's pod gets its DNS record only once it exists.

Both members listen on this namespace's loopback; member 1 knows member 2 as
``http://<name>:<port>`` before the namespace's hosts file has that name. It sends a
heartbeat every 50 ms, prints ``sending``, and once it reads a line on stdin (the test added
the name) prints how many seconds later member 2 first heard from it.
"""

from __future__ import annotations

import asyncio
import sys
import time

from peers import Member, heartbeats, run


async def main(name: str) -> None:
    a, b = await Member(1).start(), await Member(2).start()
    a.transport.set_peers({2: [f"http://{name}:{b.transport.port}"]})
    loop = asyncio.get_running_loop()
    named = loop.run_in_executor(None, sys.stdin.readline)
    print("sending", flush=True)
    n = 0
    named_at: float | None = None
    while not b.got:
        a.transport.send(heartbeats(1, 2, n, 1))
        n += 1
        await asyncio.sleep(0.05)
        if named_at is None and named.done():
            named_at = time.monotonic()
    assert named_at is not None, "member 2 heard from member 1 before its name resolved"
    print(f"delivered {time.monotonic() - named_at:.2f}", flush=True)
    await a.stop()
    await b.stop()


if __name__ == "__main__":
    run(main(sys.argv[1]), timeout=120)
