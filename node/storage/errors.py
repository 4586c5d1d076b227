"""Errors of the storage layer. Each message names the record and the data dir.

A member that meets damaged or foreign data must stop rather than serve it: these errors are
meant to end the process with a message an operator can act on.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of everything the storage layer raises on purpose."""


class CorruptDataError(StorageError):
    """A stored record or snapshot file failed its checksum, could not be decoded, or the
    stored log has a hole. Raised instead of returning damaged data."""


class DataDirError(StorageError):
    """The data dir belongs to another cluster or member, to a newer format, or to a member
    that was removed: starting with it would break the cluster's safety."""


class WriteFailure(StorageError):
    """A write to the data dir failed: the disk is full, or failing.

    The member stops, as etcd does when its WAL cannot be written. Nothing that was not
    written had been acknowledged (an entry counts toward the commit index, and a client's
    request is answered, only after its write returned), and LevelDB refuses every write
    after a failed one until it is reopened, so the only way on is a restart once the disk
    takes writes again; the member then catches up from its peers."""
