from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeepResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEEP_RESULT_UNSPECIFIED: _ClassVar[KeepResult]
    KEEP_RESULT_KEPT: _ClassVar[KeepResult]
    KEEP_RESULT_INVALID: _ClassVar[KeepResult]
    KEEP_RESULT_UNAVAILABLE: _ClassVar[KeepResult]
KEEP_RESULT_UNSPECIFIED: KeepResult
KEEP_RESULT_KEPT: KeepResult
KEEP_RESULT_INVALID: KeepResult
KEEP_RESULT_UNAVAILABLE: KeepResult

class StoredResponse(_message.Message):
    __slots__ = ("workspace_id", "id", "model", "created_at", "expires_at", "response", "input_items")
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    INPUT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    workspace_id: str
    id: str
    model: str
    created_at: int
    expires_at: int
    response: bytes
    input_items: bytes
    def __init__(self, workspace_id: _Optional[str] = ..., id: _Optional[str] = ..., model: _Optional[str] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., response: _Optional[bytes] = ..., input_items: _Optional[bytes] = ...) -> None: ...

class ResponseRef(_message.Message):
    __slots__ = ("workspace_id", "id")
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    workspace_id: str
    id: str
    def __init__(self, workspace_id: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class KeepAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StoredResponses(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[StoredResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[StoredResponse, _Mapping]]] = ...) -> None: ...

class KeepManyAck(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedScalarFieldContainer[KeepResult]
    def __init__(self, results: _Optional[_Iterable[_Union[KeepResult, str]]] = ...) -> None: ...

class ForgetAck(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
