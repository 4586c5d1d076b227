"""A delay line for packets, for kernels without tc netem: ``python -m tests.node.delayline``.

Run inside a member's network namespace, it takes the packets that an iptables ``NFQUEUE``
rule hands it (``nfnetlink_queue``), holds each for the delay plus a random jitter, drops a
share of them at random, and gives the rest back to the kernel in the order their time comes
up, so, as with netem, jitter reorders packets. Only the verdicts cross into this process
(copy mode "meta": no payload is copied), so it costs one netlink round trip per packet.

The netlink messages are built here with ``struct`` (the layouts of ``linux/netlink.h``,
``linux/netfilter/nfnetlink.h`` and ``nfnetlink_queue.h``), so no C library is needed.

    python -m tests.node.delayline --queue 7 --delay-ms 80 --jitter-ms 40 --loss 5

It prints ``ready`` once bound, and runs until killed. When it is gone the rule's
``--queue-bypass`` lets packets through again.
"""

from __future__ import annotations

import argparse
import heapq
import random
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NF_DROP = 0
NF_ACCEPT = 1

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian, packed by hand)
_NLATTR = struct.Struct("=HH")


def _attr(kind: int, payload: bytes) -> bytes:
    pad = (4 - len(payload) % 4) % 4
    return _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload + b"\0" * pad


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + _NLATTR.size <= len(data):
        length, kind = _NLATTR.unpack_from(data, pos)
        if length < _NLATTR.size:
            return
        yield kind & 0x7FFF, data[pos + _NLATTR.size : pos + length]
        pos += (length + 3) & ~3


class DelayLine:
    def __init__(self, queue: int, maxlen: int = 65536) -> None:
        self.queue = queue
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)))
        self._config(_attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))
        # When the queue overflows the kernel lets packets through rather than dropping
        # them: overflow is this tool's limit, not a fault the test asked for.
        flags = struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)
        self._config(_attr(NFQA_CFG_FLAGS, flags) + _attr(NFQA_CFG_MASK, flags))

    def _config(self, attrs: bytes) -> None:
        self.seq += 1
        self.sock.send(
            _message(NFQNL_MSG_CONFIG, self.queue, attrs, self.seq, NLM_F_REQUEST | NLM_F_ACK)
        )
        reply = self.sock.recv(65536)
        _, kind, _, _, _ = _NLMSGHDR.unpack_from(reply)
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
            if errno != 0:
                raise OSError(
                    -errno, f"nfnetlink_queue refused the configuration of queue {self.queue}"
                )

    def verdict(self, packet_id: int, verdict: int) -> None:
        self.seq += 1
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        self.sock.send(_message(NFQNL_MSG_VERDICT, self.queue, attrs, self.seq))

    def packets(self, data: bytes) -> Iterator[int]:
        """The ids of the packets in one read from the socket."""
        pos = 0
        while pos + _NLMSGHDR.size <= len(data):
            length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, pos)
            if length < _NLMSGHDR.size:
                return
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                body = data[pos + _NLMSGHDR.size + _NFGENMSG.size : pos + length]
                for akind, payload in _attrs(body):
                    if akind == NFQA_PACKET_HDR:
                        yield struct.unpack_from("!I", payload)[0]
            pos += (length + 3) & ~3

    def run(self, delay: float, jitter: float, loss: float, rng: random.Random) -> None:
        due: list[tuple[float, int]] = []
        while True:
            timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                data = self.sock.recv(1 << 20)
                now = time.monotonic()
                for pid in self.packets(data):
                    if rng.random() < loss:
                        self.verdict(pid, NF_DROP)
                    else:
                        heapq.heappush(due, (now + delay + rng.uniform(0, jitter), pid))
            now = time.monotonic()
            while due and due[0][0] <= now:
                self.verdict(heapq.heappop(due)[1], NF_ACCEPT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--jitter-ms", type=float, default=0)
    parser.add_argument("--loss", type=float, default=0, help="percent of packets dropped")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    line = DelayLine(args.queue)
    print("ready", flush=True)
    line.run(args.delay_ms / 1000, args.jitter_ms / 1000, args.loss / 100, random.Random(args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
