"""Client-side scenarios with aetcd, a Python etcd client from PyPI, run in a child process.

aetcd bundles its own copy of etcd's protobuf definitions; protobuf allows one definition of
``etcdserverpb`` per process, and the test process already holds Flotilla's. So the tests run
these scenarios as ``python -m tests.node.etcd_client <scenario> <json args>`` and read one
JSON result from stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aetcd


def client_for(endpoint: str, timeout: int = 5) -> aetcd.Client:
    host, port = endpoint.split(":")
    return aetcd.Client(host=host, port=int(port), timeout=timeout)


async def write(endpoints: list[str], first: int, count: int) -> dict[str, str]:
    """Write distinct keys through any member; return exactly those acknowledged."""
    acked: dict[str, str] = {}
    for seq in range(first, first + count):
        key, value = b"w/%06d" % seq, b"v%d" % seq
        for ep in endpoints:
            try:
                async with client_for(ep) as c:
                    await asyncio.wait_for(c.put(key, value), 5)
                acked[key.decode()] = value.decode()
                break
            except Exception:  # not acknowledged: try another member
                continue
    return acked


async def first_write(endpoints: list[str], started: float, limit: float) -> float:
    """Seconds from ``started`` (a time.time()) until a write succeeds through any endpoint."""
    clients = [client_for(ep) for ep in endpoints]
    try:
        while time.time() - started < limit:
            for c in clients:
                try:
                    await asyncio.wait_for(c.put(b"after-failover", b"x"), 0.3)
                    return time.time() - started
                except Exception:  # no leader yet, or this member still waiting
                    continue
        return -1.0
    finally:
        for c in clients:
            await c.close()


async def watch_resume(endpoints: list[str]) -> list[int]:
    """Watch, stop, resume from the last revision seen on another member: revisions seen."""
    seen: list[int] = []
    async with client_for(endpoints[0]) as writer:
        first = await writer.put(b"watch/start", b"0")
        start = first.header.revision + 1
        async with client_for(endpoints[1]) as watcher:
            stream = await watcher.watch_prefix(b"watch/", start_revision=start)
            for i in range(5):
                await writer.put(b"watch/k%d" % i, b"x")
            async for event in stream:
                seen.append(event.kv.mod_revision)
                if len(seen) == 5:
                    break
            await stream.cancel()
        last = seen[-1]
        for i in range(5, 10):
            await writer.put(b"watch/k%d" % i, b"x")
        async with client_for(endpoints[2]) as watcher:
            stream = await watcher.watch_prefix(b"watch/", start_revision=last + 1)
            async for event in stream:
                seen.append(event.kv.mod_revision)
                if len(seen) == 10:
                    break
            await stream.cancel()
    return seen


async def keep_alive_many(grant_at: str, renew_at: str, leases: int) -> dict[str, Any]:
    """Grant leases on one member, then keep every one alive at once through another (each
    keep-alive its own stream, as separate clients would), and one revoked lease too."""
    async with client_for(grant_at) as granter:
        granted = [await granter.lease(30) for _ in range(leases)]
        revoked = await granter.lease(30)
        await revoked.revoke()
    async with client_for(renew_at) as renewer:
        replies = await asyncio.gather(
            *(renewer.refresh_lease(lease.id) for lease in [*granted, revoked])
        )
    return {
        "ids": [lease.id for lease in granted] + [revoked.id],
        "replied": [r.ID for r in replies],
        "ttls": [r.TTL for r in replies],
    }


SCENARIOS: dict[str, Any] = {
    "keep_alive_many": keep_alive_many,
    "write": write,
    "first_write": first_write,
    "watch_resume": watch_resume,
}


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    result = asyncio.run(asyncio.wait_for(SCENARIOS[name](**args), 60))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
