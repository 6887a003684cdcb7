from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class JobMessage(_message.Message):
    __slots__ = ("job_id", "type", "queue", "attempt", "enqueued_at_unix_ms", "priority", "timeout_seconds", "headers", "dispatch_lock")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_LOCK_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    type: str
    queue: str
    attempt: int
    enqueued_at_unix_ms: int
    priority: int
    timeout_seconds: float
    headers: _containers.ScalarMap[str, str]
    dispatch_lock: int
    def __init__(self, job_id: _Optional[str] = ..., type: _Optional[str] = ..., queue: _Optional[str] = ..., attempt: _Optional[int] = ..., enqueued_at_unix_ms: _Optional[int] = ..., priority: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., headers: _Optional[_Mapping[str, str]] = ..., dispatch_lock: _Optional[int] = ...) -> None: ...

class DeadLetterNotice(_message.Message):
    __slots__ = ("job_id", "type", "queue", "attempts", "error", "died_at_unix_ms", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DIED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    type: str
    queue: str
    attempts: int
    error: str
    died_at_unix_ms: int
    headers: _containers.ScalarMap[str, str]
    def __init__(self, job_id: _Optional[str] = ..., type: _Optional[str] = ..., queue: _Optional[str] = ..., attempts: _Optional[int] = ..., error: _Optional[str] = ..., died_at_unix_ms: _Optional[int] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...
