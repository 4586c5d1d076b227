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
