"""Errors the store raises, each carrying the gRPC status code and etcd's exact message.

etcd clients (etcdctl, clientv3, the Python and Java clients) recognise server errors by the
status message text, e.g. clientv3 maps "etcdserver: mvcc: required revision has been
compacted" back to ``rpctypes.ErrCompacted``. The API layer can therefore turn any
:class:`EtcdError` into a gRPC status with ``context.abort(err.code, err.message)`` and clients
behave as they do against etcd.
"""

from __future__ import annotations

import grpc


class EtcdError(Exception):
    """An error with etcd's gRPC status code and message (see etcd's rpctypes)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    message: str = "etcdserver: unknown error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(self.message if detail is None else f"{self.message} ({detail})")
        self.detail = detail


class EmptyKeyError(EtcdError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: key is not provided"


class KeyNotFoundError(EtcdError):
    """Put with ignore_value/ignore_lease on a key that does not exist."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: key not found"


class ValueProvidedError(EtcdError):
    """Put with ignore_value and a non-empty value."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: value is provided"


class LeaseProvidedError(EtcdError):
    """Put with ignore_lease and a non-zero lease."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: lease is provided"


class TooManyOpsError(EtcdError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: too many operations in txn request"


class DuplicateKeyError(EtcdError):
    """A txn that would modify the same key more than once."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: duplicate key given in txn request"


class InvalidSortOptionError(EtcdError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: invalid sort option"


class CompactedError(EtcdError):
    """A read, watch or compaction at a revision that compaction has already discarded."""

    code = grpc.StatusCode.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevisionError(EtcdError):
    """A read or compaction at a revision the store has not reached yet."""

    code = grpc.StatusCode.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision is a future revision"


class LeaseNotFoundError(EtcdError):
    """A put that attaches a lease the lessor does not know."""

    code = grpc.StatusCode.NOT_FOUND
    message = "etcdserver: requested lease not found"


class CorruptDataError(EtcdError):
    """A stored record failed its checksum or could not be decoded.

    Raised instead of returning damaged data. The client sees etcd's "corrupt cluster" status;
    ``detail`` says which record was bad, for the operator.
    """

    code = grpc.StatusCode.DATA_LOSS
    message = "etcdserver: corrupt cluster"


class LeaseExistsError(EtcdError):
    """LeaseGrant with an explicit ID that is already granted."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    message = "etcdserver: lease already exists"


class LeaseTTLTooLargeError(EtcdError):
    code = grpc.StatusCode.OUT_OF_RANGE
    message = "etcdserver: too large lease TTL"


class RequestTooLargeError(EtcdError):
    """A request that would make a Raft entry larger than the limit (etcd's 1.5 MiB)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    message = "etcdserver: request is too large"


class NoLeaderError(EtcdError):
    code = grpc.StatusCode.UNAVAILABLE
    message = "etcdserver: no leader"


class NotLeaderError(EtcdError):
    """A leader-only operation (lease renewal, expiry) asked of a member that is not leader."""

    code = grpc.StatusCode.UNAVAILABLE
    message = "etcdserver: not leader"


class RequestTimeoutError(EtcdError):
    code = grpc.StatusCode.UNAVAILABLE
    message = "etcdserver: request timed out"


class NoSpaceError(EtcdError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    message = "etcdserver: mvcc: database space exceeded"


class MalformedRequestError(EtcdError):
    """A Raft entry whose data is not a request envelope this version understands."""

    code = grpc.StatusCode.INTERNAL
    message = "etcdserver: malformed request"
