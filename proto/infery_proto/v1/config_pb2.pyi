from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Provider(_message.Message):
    __slots__ = ("name", "kind", "base_url", "api_key", "cluster", "base_path", "host")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    BASE_PATH_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    base_url: str
    api_key: str
    cluster: str
    base_path: str
    host: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., base_url: _Optional[str] = ..., api_key: _Optional[str] = ..., cluster: _Optional[str] = ..., base_path: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...

class Prices(_message.Message):
    __slots__ = ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok", "per_image", "per_audio_second", "per_mchar")
    INPUT_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PER_AUDIO_SECOND_FIELD_NUMBER: _ClassVar[int]
    PER_MCHAR_FIELD_NUMBER: _ClassVar[int]
    input_per_mtok: str
    cached_input_per_mtok: str
    output_per_mtok: str
    per_image: str
    per_audio_second: str
    per_mchar: str
    def __init__(self, input_per_mtok: _Optional[str] = ..., cached_input_per_mtok: _Optional[str] = ..., output_per_mtok: _Optional[str] = ..., per_image: _Optional[str] = ..., per_audio_second: _Optional[str] = ..., per_mchar: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("slug", "provider", "upstream_model", "prices", "capabilities", "created")
    SLUG_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_MODEL_FIELD_NUMBER: _ClassVar[int]
    PRICES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    slug: str
    provider: str
    upstream_model: str
    prices: Prices
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    created: int
    def __init__(self, slug: _Optional[str] = ..., provider: _Optional[str] = ..., upstream_model: _Optional[str] = ..., prices: _Optional[_Union[Prices, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., created: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("slug", "fallbacks", "retry_on", "attempt_timeout_s", "total_timeout_s", "cluster", "variants")
    SLUG_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    slug: str
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    retry_on: _containers.RepeatedScalarFieldContainer[str]
    attempt_timeout_s: float
    total_timeout_s: float
    cluster: str
    variants: _containers.RepeatedCompositeFieldContainer[ChainVariant]
    def __init__(self, slug: _Optional[str] = ..., fallbacks: _Optional[_Iterable[str]] = ..., retry_on: _Optional[_Iterable[str]] = ..., attempt_timeout_s: _Optional[float] = ..., total_timeout_s: _Optional[float] = ..., cluster: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[ChainVariant, _Mapping]]] = ...) -> None: ...

class ChainVariant(_message.Message):
    __slots__ = ("targets", "cluster")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedScalarFieldContainer[str]
    cluster: str
    def __init__(self, targets: _Optional[_Iterable[str]] = ..., cluster: _Optional[str] = ...) -> None: ...

class Workspace(_message.Message):
    __slots__ = ("id", "name", "rpm", "tpm", "budget_credits", "budget_period", "price_multiplier", "allowed_models", "share_idempotent_replays", "batch_rpm", "batch_tpm")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    TPM_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CREDITS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PERIOD_FIELD_NUMBER: _ClassVar[int]
    PRICE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    SHARE_IDEMPOTENT_REPLAYS_FIELD_NUMBER: _ClassVar[int]
    BATCH_RPM_FIELD_NUMBER: _ClassVar[int]
    BATCH_TPM_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    rpm: int
    tpm: int
    budget_credits: str
    budget_period: str
    price_multiplier: str
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    share_idempotent_replays: bool
    batch_rpm: int
    batch_tpm: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., rpm: _Optional[int] = ..., tpm: _Optional[int] = ..., budget_credits: _Optional[str] = ..., budget_period: _Optional[str] = ..., price_multiplier: _Optional[str] = ..., allowed_models: _Optional[_Iterable[str]] = ..., share_idempotent_replays: _Optional[bool] = ..., batch_rpm: _Optional[int] = ..., batch_tpm: _Optional[int] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "key_hash", "workspace_id", "member_id", "name", "prefix")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_HASH_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    id: str
    key_hash: str
    workspace_id: str
    member_id: str
    name: str
    prefix: str
    def __init__(self, id: _Optional[str] = ..., key_hash: _Optional[str] = ..., workspace_id: _Optional[str] = ..., member_id: _Optional[str] = ..., name: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class DataPlaneSecret(_message.Message):
    __slots__ = ("name", "attempt_grant_key", "files_identity_key", "batch_line_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_GRANT_KEY_FIELD_NUMBER: _ClassVar[int]
    FILES_IDENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    BATCH_LINE_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    attempt_grant_key: bytes
    files_identity_key: bytes
    batch_line_key: bytes
    def __init__(self, name: _Optional[str] = ..., attempt_grant_key: _Optional[bytes] = ..., files_identity_key: _Optional[bytes] = ..., batch_line_key: _Optional[bytes] = ...) -> None: ...
