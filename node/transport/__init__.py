"""gRPC between members: batched Raft message streams, snapshot streaming, lease forwarding.

The protocol is our own (``proto/raftpeer.proto``); :class:`~.peer.Transport` is what the
driver loop uses.
"""

from flotilla.node.transport.peer import Transport, UnknownPeerError
from flotilla.node.transport.reports import Report, ReportKind

__all__ = ["Report", "ReportKind", "Transport", "UnknownPeerError"]
