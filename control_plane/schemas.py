"""The shapes of the admin API (SPEC "Admin API shapes"), shared with the config file.

Validation that needs only the value itself lives here; checks against stored state
(does that provider exist?) live in `control_plane.resources`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from control_plane.decimals import parse_decimal, plain_decimal

DEFAULT_ATTEMPT_TIMEOUT_S = 120.0
DEFAULT_TOTAL_TIMEOUT_S = 300.0

ProviderKind = Literal["openai", "anthropic", "google", "xai", "openai_compatible"]
RetryTrigger = Literal["5xx", "429", "reset", "connect_failure", "timeout"]
Capability = Literal[
    "chat",
    "tools",
    "vision",
    "json_schema",
    "pdf",
    "embeddings",
    "images",
    "stream",
    "audio_speech",
    "audio_transcription",
]
Role = Literal["owner", "admin", "member"]
BudgetPeriod = Literal["day", "month"]

PROVIDER_KINDS: tuple[ProviderKind, ...] = get_args(ProviderKind)
RETRY_ON: tuple[RetryTrigger, ...] = get_args(RetryTrigger)
CAPABILITIES: tuple[Capability, ...] = get_args(Capability)
ROLES: tuple[Role, ...] = get_args(Role)

# Names and slugs travel in URL paths and Envoy/xDS identifiers: no slashes or spaces.
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["openai"])]
Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", examples=["gpt-4o"])]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _non_negative_decimal(value: object) -> str:
    number = parse_decimal(value)
    if number < 0:
        raise ValueError("must not be negative")
    return plain_decimal(number, value)


def _positive_decimal(value: object) -> str:
    number = parse_decimal(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return plain_decimal(number, value)


def _base_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; use api_key")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value.strip().rstrip("/")


def _email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise ValueError("must be an email address")
    return value


Price = Annotated[str, BeforeValidator(_non_negative_decimal), Field(examples=["0.15"])]
Credits = Annotated[str, BeforeValidator(_non_negative_decimal), Field(examples=["100"])]
Multiplier = Annotated[str, BeforeValidator(_positive_decimal), Field(examples=["1"])]
BaseUrl = Annotated[
    str, AfterValidator(_base_url), Field(max_length=2048, examples=["https://api.openai.com/v1"])
]
Email = Annotated[str, AfterValidator(_email), Field(examples=["ada@example.com"])]


_INT64 = 2**63 - 1  # the store's integer columns


class Body(BaseModel):
    # Unknown fields are ignored so that a GET answer can be PUT back unchanged.
    model_config = ConfigDict(extra="ignore")


# --- providers ---------------------------------------------------------------------------


class ProviderIn(Body):
    name: Name
    kind: ProviderKind
    base_url: BaseUrl
    api_key: str | None = Field(default=None, max_length=4096, description="write-only")


class ProviderUpdate(Body):
    """PUT body: omitted fields keep their value; `api_key: null` or `""` removes the key."""

    name: Name | None = None
    kind: ProviderKind | None = None
    base_url: BaseUrl | None = None
    api_key: str | None = Field(default=None, max_length=4096, description="write-only")


class ProviderOut(BaseModel):
    name: str
    kind: str
    base_url: str
    has_api_key: bool


# --- models ------------------------------------------------------------------------------


class Prices(Body):
    input_per_mtok: Price | None = None
    cached_input_per_mtok: Price | None = None
    output_per_mtok: Price | None = None
    per_image: Price | None = None
    per_audio_second: Price | None = None
    per_mchar: Price | None = None


class ModelIn(Body):
    """POST body: for a catalog slug, omitted upstream_model/prices/capabilities come from the catalog."""

    slug: Slug
    provider: Name
    upstream_model: str | None = Field(default=None, min_length=1, max_length=256)
    prices: Prices | None = None
    capabilities: list[Capability] | None = None


class ModelUpdate(Body):
    """PUT body: omitted fields keep their value; a given `prices` object replaces all six prices."""

    slug: Slug | None = None
    provider: Name | None = None
    upstream_model: str | None = Field(default=None, min_length=1, max_length=256)
    prices: Prices | None = None
    capabilities: list[Capability] | None = None


class ModelOut(BaseModel):
    slug: str
    provider: str
    upstream_model: str
    prices: Prices
    capabilities: list[str]
    created: int


# --- routes ------------------------------------------------------------------------------


class RouteIn(Body):
    """PUT body; on an existing route omitted fields keep their value."""

    fallbacks: list[Slug] = Field(default_factory=list)
    retry_on: list[RetryTrigger] = Field(default_factory=lambda: list(RETRY_ON))
    # Envoy durations are kept to the millisecond: 1 ms is the smallest that means anything.
    attempt_timeout_s: float = Field(default=DEFAULT_ATTEMPT_TIMEOUT_S, ge=0.001, le=3600)
    total_timeout_s: float = Field(default=DEFAULT_TOTAL_TIMEOUT_S, ge=0.001, le=3600)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _status_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 429 as a number.
        if isinstance(value, list):
            return [
                str(item) if isinstance(item, int) and not isinstance(item, bool) else item for item in value
            ]
        return value

    @field_validator("fallbacks", "retry_on")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an entry")
        return value


class RouteOut(BaseModel):
    slug: str
    fallbacks: list[str]
    retry_on: list[str]
    attempt_timeout_s: float
    total_timeout_s: float


# --- workspaces, members, keys -----------------------------------------------------------


class WorkspaceIn(Body):
    name: Name
    rpm: int | None = Field(
        default=None, ge=0, le=_INT64, description="requests per minute; null = unlimited"
    )
    tpm: int | None = Field(default=None, ge=0, le=_INT64, description="tokens per minute; null = unlimited")
    budget_credits: Credits | None = Field(default=None, description="null = no budget")
    budget_period: BudgetPeriod = "month"
    price_multiplier: Multiplier = "1"
    allowed_models: list[Slug] = Field(default_factory=list, description="empty = every model")
    share_idempotent_replays: bool = Field(
        default=False,
        description="serve an Idempotency-Key's stored response to any key of the workspace; "
        "by default only keys of the member who made the first request get it",
    )
    batch_rpm: int | None = Field(
        default=None,
        ge=0,
        le=_INT64,
        description="batch lines per minute, a lane of their own (never live traffic's); null = as rpm",
    )
    batch_tpm: int | None = Field(
        default=None,
        ge=0,
        le=_INT64,
        description="batch lines' tokens per minute, their own lane; null = as tpm",
    )

    @field_validator("allowed_models")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WorkspaceUpdate(Body):
    """PUT body: omitted fields keep their value; explicit null lifts a limit or budget."""

    name: Name | None = None
    rpm: int | None = Field(default=None, ge=0, le=_INT64)
    tpm: int | None = Field(default=None, ge=0, le=_INT64)
    budget_credits: Credits | None = None
    budget_period: BudgetPeriod | None = None
    price_multiplier: Multiplier | None = None
    allowed_models: list[Slug] | None = None
    share_idempotent_replays: bool | None = None
    batch_rpm: int | None = Field(default=None, ge=0, le=_INT64)
    batch_tpm: int | None = Field(default=None, ge=0, le=_INT64)


class WorkspaceOut(BaseModel):
    id: str
    name: str
    rpm: int | None
    tpm: int | None
    budget_credits: str | None
    budget_period: str
    price_multiplier: str
    allowed_models: list[str]
    share_idempotent_replays: bool
    batch_rpm: int | None = None
    batch_tpm: int | None = None


class MemberIn(Body):
    email: Email
    role: Role = "member"


class MemberOut(BaseModel):
    id: str
    email: str
    role: str


class KeyIn(Body):
    name: str = Field(min_length=1, max_length=128)
    member: str = Field(min_length=1, max_length=320, description="member id or email")


class KeyOut(BaseModel):
    id: str
    name: str
    member: str = Field(description="member id")
    member_email: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the inf_ secret; shown only in this answer")


# --- files -------------------------------------------------------------------------------


class StoredFileOut(BaseModel):
    """A file the workspace uploaded to ``/v1/files``: its metadata; its bytes stay the workspace's."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: datetime
    expires_at: datetime | None = Field(description="when it expires; null: kept until deleted")
    member: str = Field(description="the member id that uploaded it")
    key_id: str


class StoredFileList(BaseModel):
    data: list[StoredFileOut]
    has_more: bool = Field(description="more files after the last one: ask again with `after`")


# --- usage -------------------------------------------------------------------------------


class UsageRow(BaseModel):
    group: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    credits: str
    file_bytes: int = 0  # bytes of files uploaded (/v1/files) or deleted (/v1/files/{file_id})


class UsageReport(BaseModel):
    rows: list[UsageRow]


class UsageRecordOut(BaseModel):
    request_id: str
    started_at: datetime
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
    usage_estimated: bool  # tokens are the gateway's estimate, not the provider's count
    usage_rejected: str  # why the provider's usage was not charged as given; empty when it was
    characters: int  # characters spoken (/v1/audio/speech); 0 for other endpoints
    audio_ms: int  # milliseconds of audio heard (/v1/audio/transcriptions, /translations)
    file_bytes: int  # bytes of the file uploaded (/v1/files) or deleted (/v1/files/{file_id})
    batch_id: str = ""  # a batch's line: its batch (/v1/batches)
    custom_id: str = ""  # and the line's custom_id
    # An emulated n > 1's extra choice: the request_id of the request the client made; "" otherwise.
    parent_request_id: str = ""


class UsageRecordList(BaseModel):
    data: list[UsageRecordOut]


class Health(BaseModel):
    status: str
    revision: int
