from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RevealMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVEAL_MODE_UNSPECIFIED: _ClassVar[RevealMode]
    REVEAL_MODE_BOTH: _ClassVar[RevealMode]
    REVEAL_MODE_BANK: _ClassVar[RevealMode]
REVEAL_MODE_UNSPECIFIED: RevealMode
REVEAL_MODE_BOTH: RevealMode
REVEAL_MODE_BANK: RevealMode

class OpenSessionRequest(_message.Message):
    __slots__ = ("protocol", "bank_set_size", "reveal")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    BANK_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    REVEAL_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    bank_set_size: int
    reveal: RevealMode
    def __init__(self, protocol: _Optional[str] = ..., bank_set_size: _Optional[int] = ..., reveal: _Optional[_Union[RevealMode, str]] = ...) -> None: ...

class PreparationProgress(_message.Message):
    __slots__ = ("done", "total")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session_id", "bureau_set_size", "key_epoch", "tag_bytes", "max_chunk", "protocol")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BUREAU_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TAG_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    bureau_set_size: int
    key_epoch: int
    tag_bytes: int
    max_chunk: int
    protocol: str
    def __init__(self, session_id: _Optional[str] = ..., bureau_set_size: _Optional[int] = ..., key_epoch: _Optional[int] = ..., tag_bytes: _Optional[int] = ..., max_chunk: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class OpenSessionUpdate(_message.Message):
    __slots__ = ("progress", "opened")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    progress: PreparationProgress
    opened: SessionOpened
    def __init__(self, progress: _Optional[_Union[PreparationProgress, _Mapping]] = ..., opened: _Optional[_Union[SessionOpened, _Mapping]] = ...) -> None: ...

class BlindedIds(_message.Message):
    __slots__ = ("session_id", "offset", "points")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    offset: int
    points: bytes
    def __init__(self, session_id: _Optional[str] = ..., offset: _Optional[int] = ..., points: _Optional[bytes] = ...) -> None: ...

class ExponentiatedIds(_message.Message):
    __slots__ = ("session_id", "offset", "points")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    offset: int
    points: bytes
    def __init__(self, session_id: _Optional[str] = ..., offset: _Optional[int] = ..., points: _Optional[bytes] = ...) -> None: ...

class FetchTagsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class BureauTags(_message.Message):
    __slots__ = ("session_id", "offset", "tags")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    offset: int
    tags: bytes
    def __init__(self, session_id: _Optional[str] = ..., offset: _Optional[int] = ..., tags: _Optional[bytes] = ...) -> None: ...

class MatchedTags(_message.Message):
    __slots__ = ("session_id", "tags")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tags: bytes
    def __init__(self, session_id: _Optional[str] = ..., tags: _Optional[bytes] = ...) -> None: ...

class RevealSummary(_message.Message):
    __slots__ = ("session_id", "matched")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    matched: int
    def __init__(self, session_id: _Optional[str] = ..., matched: _Optional[int] = ...) -> None: ...
