from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

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

class ForgetAck(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
