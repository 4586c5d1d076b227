from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entry(_message.Message):
    __slots__ = ("term", "index", "type", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    type: int
    data: bytes
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., type: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ConfState(_message.Message):
    __slots__ = ("voters", "outgoing", "learners")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    OUTGOING_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    outgoing: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., outgoing: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...

class SnapshotMeta(_message.Message):
    __slots__ = ("index", "term", "conf")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf: ConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf: _Optional[_Union[ConfState, _Mapping]] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("type", "to", "frm", "term", "log_term", "index", "entries", "commit", "reject", "reject_hint", "snapshot", "context", "reads")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FRM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    type: int
    to: int
    frm: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit: int
    reject: bool
    reject_hint: int
    snapshot: SnapshotMeta
    context: int
    reads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, type: _Optional[int] = ..., to: _Optional[int] = ..., frm: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., snapshot: _Optional[_Union[SnapshotMeta, _Mapping]] = ..., context: _Optional[int] = ..., reads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RaftMessages(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("cluster_id", "from_id", "payload", "crc")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CRC_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    payload: bytes
    crc: int
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., payload: _Optional[bytes] = ..., crc: _Optional[int] = ...) -> None: ...

class SendSummary(_message.Message):
    __slots__ = ("batches", "messages")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    messages: int
    def __init__(self, batches: _Optional[int] = ..., messages: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("cluster_id", "from_id", "header", "data", "last", "checksum")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    header: RaftMessage
    data: bytes
    last: bool
    checksum: bytes
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., header: _Optional[_Union[RaftMessage, _Mapping]] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., checksum: _Optional[bytes] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("bytes",)
    BYTES_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    def __init__(self, bytes: _Optional[int] = ...) -> None: ...

class LeaseRenewRequest(_message.Message):
    __slots__ = ("cluster_id", "from_id", "lease_id")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    lease_id: int
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., lease_id: _Optional[int] = ...) -> None: ...

class LeaseRenewResponse(_message.Message):
    __slots__ = ("ttl",)
    TTL_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    def __init__(self, ttl: _Optional[int] = ...) -> None: ...

class LeaseRemainingResponse(_message.Message):
    __slots__ = ("ttl",)
    TTL_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    def __init__(self, ttl: _Optional[int] = ...) -> None: ...

class LeaseRenewBatchRequest(_message.Message):
    __slots__ = ("cluster_id", "from_id", "lease_ids")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    lease_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., lease_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class LeaseRenewBatchResponse(_message.Message):
    __slots__ = ("ttls",)
    TTLS_FIELD_NUMBER: _ClassVar[int]
    ttls: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ttls: _Optional[_Iterable[int]] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("cluster_id",)
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    def __init__(self, cluster_id: _Optional[int] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("cluster_id", "members")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    members: bytes
    def __init__(self, cluster_id: _Optional[int] = ..., members: _Optional[bytes] = ...) -> None: ...

class PeerHashRequest(_message.Message):
    __slots__ = ("cluster_id", "from_id", "revision", "applied_index")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    revision: int
    applied_index: int
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., revision: _Optional[int] = ..., applied_index: _Optional[int] = ...) -> None: ...

class PeerHashResponse(_message.Message):
    __slots__ = ("member_id", "hash", "hash_revision", "compact_revision", "revision")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_REVISION_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    member_id: int
    hash: int
    hash_revision: int
    compact_revision: int
    revision: int
    def __init__(self, member_id: _Optional[int] = ..., hash: _Optional[int] = ..., hash_revision: _Optional[int] = ..., compact_revision: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...
