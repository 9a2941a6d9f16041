from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UsageRecord(_message.Message):
    __slots__ = ("request_id", "started_at_ms", "workspace_id", "member_id", "key_id", "endpoint", "model_requested", "model_used", "provider", "fallback_from", "status", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "credits", "latency_ms", "ttft_ms", "idempotent_replay", "stream", "error_code", "usage_estimated", "usage_rejected", "characters", "audio_ms", "file_bytes", "batch_id", "custom_id", "parent_request_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    MODEL_USED_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FROM_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_REPLAY_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    USAGE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    USAGE_REJECTED_FIELD_NUMBER: _ClassVar[int]
    CHARACTERS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    started_at_ms: int
    workspace_id: str
    member_id: str
    key_id: str
    endpoint: str
    model_requested: str
    model_used: str
    provider: str
    fallback_from: str
    status: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    credits: str
    latency_ms: float
    ttft_ms: float
    idempotent_replay: bool
    stream: bool
    error_code: str
    usage_estimated: bool
    usage_rejected: str
    characters: int
    audio_ms: int
    file_bytes: int
    batch_id: str
    custom_id: str
    parent_request_id: str
    def __init__(self, request_id: _Optional[str] = ..., started_at_ms: _Optional[int] = ..., workspace_id: _Optional[str] = ..., member_id: _Optional[str] = ..., key_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., model_requested: _Optional[str] = ..., model_used: _Optional[str] = ..., provider: _Optional[str] = ..., fallback_from: _Optional[str] = ..., status: _Optional[int] = ..., input_tokens: _Optional[int] = ..., cached_input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., credits: _Optional[str] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., idempotent_replay: _Optional[bool] = ..., stream: _Optional[bool] = ..., error_code: _Optional[str] = ..., usage_estimated: _Optional[bool] = ..., usage_rejected: _Optional[str] = ..., characters: _Optional[int] = ..., audio_ms: _Optional[int] = ..., file_bytes: _Optional[int] = ..., batch_id: _Optional[str] = ..., custom_id: _Optional[str] = ..., parent_request_id: _Optional[str] = ...) -> None: ...

class UsageBatch(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[UsageRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[UsageRecord, _Mapping]]] = ...) -> None: ...

class UsageAck(_message.Message):
    __slots__ = ("stored", "duplicates")
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    stored: int
    duplicates: int
    def __init__(self, stored: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...
