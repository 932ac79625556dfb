from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListTablesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TableInfo(_message.Message):
    __slots__ = ("product", "version", "key_epoch", "data_date", "entries", "payload_bytes", "description", "neutral_score", "reason_features")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    DATA_DATE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NEUTRAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FEATURES_FIELD_NUMBER: _ClassVar[int]
    product: str
    version: int
    key_epoch: int
    data_date: str
    entries: int
    payload_bytes: int
    description: str
    neutral_score: float
    reason_features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product: _Optional[str] = ..., version: _Optional[int] = ..., key_epoch: _Optional[int] = ..., data_date: _Optional[str] = ..., entries: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., description: _Optional[str] = ..., neutral_score: _Optional[float] = ..., reason_features: _Optional[_Iterable[str]] = ...) -> None: ...

class TableCatalogue(_message.Message):
    __slots__ = ("key_epoch", "max_points", "tables", "bureau_id", "max_streams", "lookups_left_today")
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    BUREAU_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_LEFT_TODAY_FIELD_NUMBER: _ClassVar[int]
    key_epoch: int
    max_points: int
    tables: _containers.RepeatedCompositeFieldContainer[TableInfo]
    bureau_id: str
    max_streams: int
    lookups_left_today: int
    def __init__(self, key_epoch: _Optional[int] = ..., max_points: _Optional[int] = ..., tables: _Optional[_Iterable[_Union[TableInfo, _Mapping]]] = ..., bureau_id: _Optional[str] = ..., max_streams: _Optional[int] = ..., lookups_left_today: _Optional[int] = ...) -> None: ...

class BlindedPoints(_message.Message):
    __slots__ = ("key_epoch", "points")
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    key_epoch: int
    points: bytes
    def __init__(self, key_epoch: _Optional[int] = ..., points: _Optional[bytes] = ...) -> None: ...

class EvaluatedPoints(_message.Message):
    __slots__ = ("key_epoch", "points", "receipts")
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    key_epoch: int
    points: bytes
    receipts: bytes
    def __init__(self, key_epoch: _Optional[int] = ..., points: _Optional[bytes] = ..., receipts: _Optional[bytes] = ...) -> None: ...

class FetchTableRequest(_message.Message):
    __slots__ = ("product", "version", "key_epoch", "since_version")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    product: str
    version: int
    key_epoch: int
    since_version: int
    def __init__(self, product: _Optional[str] = ..., version: _Optional[int] = ..., key_epoch: _Optional[int] = ..., since_version: _Optional[int] = ...) -> None: ...

class TableChunk(_message.Message):
    __slots__ = ("offset", "total", "tags", "sealed", "revisions", "since_version", "removed")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    offset: int
    total: int
    tags: bytes
    sealed: bytes
    revisions: bytes
    since_version: int
    removed: bytes
    def __init__(self, offset: _Optional[int] = ..., total: _Optional[int] = ..., tags: _Optional[bytes] = ..., sealed: _Optional[bytes] = ..., revisions: _Optional[bytes] = ..., since_version: _Optional[int] = ..., removed: _Optional[bytes] = ...) -> None: ...
