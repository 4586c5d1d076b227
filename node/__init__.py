"""flotilla-node: one member of a Flotilla cluster."""

import os

# The etcd API version clients see in Status (etcdctl prints it); Flotilla's own version
# follows after the plus sign.
__version__ = "3.5.0+flotilla.0.1.0"

# gRPC's TCP through its newer EventEngine costs this process more per call than its
# classic I/O manager: a unary call on loopback 410 → 290 µs round trip, 200 → 165 µs of
# the server's CPU (grpcio 1.85, uvloop; bench/results/NOTES.md). Every client request and
# every peer message pays it, so members use the classic one. gRPC reads the variable once,
# when it is first imported, hence here, before any module of the package imports it; a
# value already in the environment wins.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")
