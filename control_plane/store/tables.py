"""SQLModel tables: the single source of truth the admin API edits and xDS serves.

Money is never a float here: prices, budgets and multipliers are canonical decimal
strings, usage credits are integer pico-credits (exact SUMs in SQL) plus the exact
string the client was told.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite drops the offset on the way in; this puts UTC back on the way out so callers
    never compare naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# Deterministic constraint names, so later migrations can address them on every backend.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def _json_list() -> Any:
    return Field(default_factory=list, sa_type=JSON, nullable=False)


def _updated_revision() -> Any:
    """The configuration revision that last wrote this row (stamped by `changes.mutation`).

    Indexed: the publisher reads "rows changed since revision N", so a change costs
    work proportional to the change, not to the table.
    """
    return Field(default=0, sa_type=BigInteger, index=True)


class Provider(SQLModel, table=True):
    __tablename__ = "providers"

    name: str = Field(primary_key=True, sa_type=String(64))
    kind: str = Field(sa_type=String(32))
    base_url: str = Field(sa_type=String(2048))
    api_key: str | None = Field(default=None, sa_type=String(4096))
    updated_revision: int = _updated_revision()


class Model(SQLModel, table=True):
    __tablename__ = "models"

    slug: str = Field(primary_key=True, sa_type=String(128))
    provider: str = Field(foreign_key="providers.name", ondelete="RESTRICT", index=True, sa_type=String(64))
    upstream_model: str = Field(sa_type=String(256))
    input_per_mtok: str | None = Field(default=None, sa_type=String(64))
    cached_input_per_mtok: str | None = Field(default=None, sa_type=String(64))
    output_per_mtok: str | None = Field(default=None, sa_type=String(64))
    per_image: str | None = Field(default=None, sa_type=String(64))
    per_audio_second: str | None = Field(default=None, sa_type=String(64))
    per_mchar: str | None = Field(default=None, sa_type=String(64))
    capabilities: list[str] = _json_list()
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_revision: int = _updated_revision()


PRICE_FIELDS = (
    "input_per_mtok",
    "cached_input_per_mtok",
    "output_per_mtok",
    "per_image",
    "per_audio_second",
    "per_mchar",
)


class Route(SQLModel, table=True):
    __tablename__ = "routes"

    slug: str = Field(primary_key=True, foreign_key="models.slug", ondelete="CASCADE", sa_type=String(128))
    fallbacks: list[str] = _json_list()
    retry_on: list[str] = _json_list()
    attempt_timeout_s: float
    total_timeout_s: float
    updated_revision: int = _updated_revision()


class Workspace(SQLModel, table=True):
    __tablename__ = "workspaces"

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=String(36))
    name: str = Field(unique=True, sa_type=String(64))
    rpm: int | None = Field(default=None, sa_type=BigInteger)
    tpm: int | None = Field(default=None, sa_type=BigInteger)
    budget_credits: str | None = Field(default=None, sa_type=String(64))
    budget_period: str = Field(default="month", sa_type=String(16))
    price_multiplier: str = Field(default="1", sa_type=String(64))
    allowed_models: list[str] = _json_list()
    # An idempotent replay goes to any key of the workspace, not only to the first request's member.
    share_idempotent_replays: bool = False
    updated_revision: int = _updated_revision()
    # The batch lane's limits (ext_proc/limits.py): null = the same figure as rpm/tpm, in buckets of
    # their own, so batch lines never take what a live request would be admitted on.
    batch_rpm: int | None = Field(default=None, sa_type=BigInteger)
    batch_tpm: int | None = Field(default=None, sa_type=BigInteger)


class Member(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("workspace_id", "email", name="uq_members_workspace_id_email"),)

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=String(36))
    workspace_id: str = Field(foreign_key="workspaces.id", ondelete="CASCADE", sa_type=String(36))
    email: str = Field(sa_type=String(320))
    role: str = Field(sa_type=String(16))


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=String(36))
    workspace_id: str = Field(foreign_key="workspaces.id", ondelete="CASCADE", index=True, sa_type=String(36))
    member_id: str = Field(foreign_key="members.id", ondelete="CASCADE", index=True, sa_type=String(36))
    name: str = Field(sa_type=String(128))
    prefix: str = Field(sa_type=String(16))
    key_hash: str = Field(unique=True, sa_type=String(64))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_revision: int = _updated_revision()


class UsageRecord(SQLModel, table=True):
    """One row per request id; the fields of `infery.v1.UsageRecord` plus two derived columns.

    `day` (UTC, YYYY-MM-DD) makes group-by-day portable between SQLite and PostgreSQL;
    `credits_pico` makes SUM(credits) exact in SQL while `credits` keeps the exact string.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_workspace_started", "workspace_id", "started_at_ms"),
        Index("ix_usage_records_started", "started_at_ms"),
        Index("ix_usage_records_batch_id", "batch_id"),
        Index("ix_usage_records_parent_request_id", "parent_request_id"),
    )

    request_id: str = Field(primary_key=True, sa_type=String(128))
    started_at_ms: int = Field(sa_type=BigInteger)
    day: str = Field(sa_type=String(10))
    workspace_id: str = Field(default="", sa_type=String(64))
    member_id: str = Field(default="", sa_type=String(64))
    key_id: str = Field(default="", index=True, sa_type=String(64))
    endpoint: str = Field(default="", sa_type=String(128))
    model_requested: str = Field(default="", sa_type=String(128))
    model_used: str = Field(default="", sa_type=String(128))
    provider: str = Field(default="", sa_type=String(64))
    fallback_from: str = Field(default="", sa_type=String(128))
    status: int = 0
    input_tokens: int = Field(default=0, sa_type=BigInteger)
    cached_input_tokens: int = Field(default=0, sa_type=BigInteger)
    output_tokens: int = Field(default=0, sa_type=BigInteger)
    reasoning_tokens: int = Field(default=0, sa_type=BigInteger)
    credits: str = Field(default="0", sa_type=String(64))
    credits_pico: int = Field(default=0, sa_type=BigInteger)
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    idempotent_replay: bool = False
    stream: bool = False
    error_code: str = Field(default="", sa_type=String(64))
    # Tokens estimated by the gateway (stream abandoned or cut, provider usage missing or invalid).
    usage_estimated: bool = False
    usage_rejected: str = Field(default="", sa_type=String(256))  # why the provider's usage was not used
    characters: int = Field(default=0, sa_type=BigInteger)  # characters spoken (speech)
    audio_ms: int = Field(default=0, sa_type=BigInteger)  # milliseconds of audio heard (transcriptions)
    file_bytes: int = Field(default=0, sa_type=BigInteger)  # a file's bytes, uploaded or deleted (/v1/files)
    batch_id: str = Field(default="", sa_type=String(64))  # a batch's line: its batch (/v1/batches)
    custom_id: str = Field(default="", sa_type=String(512))  # and the line's custom_id
    # An emulated n's extra choice: the request the client made (its own record's request_id).
    parent_request_id: str = Field(default="", sa_type=String(128))


class UsageRollup(SQLModel, table=True):
    """Sums of usage records per hour or per UTC day and per workspace, key, member, model, endpoint.

    Kept in the transaction that stores the records (only records new to the store count), so a
    usage report over whole hours and days reads a few rows per bucket instead of every record;
    `resources/usage_rollups.py` says which part of a report comes from here and which from the
    records themselves. `day` is the bucket's UTC date (group-by-day without date arithmetic).
    """

    __tablename__ = "usage_rollups"
    # WITHOUT ROWID on SQLite: an upsert then updates one B-tree (the key), not a key index and a table.
    __table_args__ = (
        Index("ix_usage_rollups_workspace_bucket", "workspace_id", "period", "bucket_ms"),
        {"sqlite_with_rowid": False},
    )

    period: str = Field(primary_key=True, sa_type=String(4))  # "hour" | "day"
    bucket_ms: int = Field(primary_key=True, sa_type=BigInteger)  # the period's start, unix ms
    workspace_id: str = Field(primary_key=True, sa_type=String(64))
    key_id: str = Field(primary_key=True, sa_type=String(64))
    member_id: str = Field(primary_key=True, sa_type=String(64))
    model_used: str = Field(primary_key=True, sa_type=String(128))
    endpoint: str = Field(primary_key=True, sa_type=String(128))
    day: str = Field(sa_type=String(10))
    requests: int = Field(default=0, sa_type=BigInteger)
    input_tokens: int = Field(default=0, sa_type=BigInteger)
    cached_input_tokens: int = Field(default=0, sa_type=BigInteger)
    output_tokens: int = Field(default=0, sa_type=BigInteger)
    credits_pico: int = Field(default=0, sa_type=BigInteger)
    file_bytes: int = Field(default=0, sa_type=BigInteger)


class ConfigRevision(SQLModel, table=True):
    """A single row whose counter moves with every configuration change (xDS version)."""

    __tablename__ = "config_revision"

    id: int = Field(default=1, primary_key=True)
    revision: int = Field(default=0, sa_type=BigInteger)


class Setting(SQLModel, table=True):
    __tablename__ = "settings"

    key: str = Field(primary_key=True, sa_type=String(64))
    value: str = Field(sa_type=String(1024))


class ConfigTombstone(SQLModel, table=True):
    """A deleted configuration row: what the data plane must drop, found by revision like a change."""

    __tablename__ = "config_tombstones"

    kind: str = Field(primary_key=True, sa_type=String(32))  # the table's name
    key: str = Field(primary_key=True, sa_type=String(128))  # the row's primary key
    revision: int = Field(sa_type=BigInteger, index=True)


class StoredFile(SQLModel, table=True):
    """A file uploaded through ``/v1/files`` (control_plane/files/): its metadata; the bytes are in
    the files storage (``INFERY_FILES_URL``) under ``storage_key``.

    Scoped to its workspace: every query names ``workspace_id``. Ids are time-ordered
    (``file-`` + milliseconds + random bits), so ordering by id is ordering by creation,
    and a list's ``after`` cursor is an id comparison on the (workspace_id, id) index.
    A row is ``uploading`` while its bytes arrive (never listed nor served), then
    ``processed``; the sweeper deletes expired files and abandoned uploads, bytes first.
    """

    __tablename__ = "stored_files"
    __table_args__ = (
        Index("ix_stored_files_workspace_id", "workspace_id", "id"),
        Index("ix_stored_files_expires_at", "expires_at"),
        Index("ix_stored_files_status_created", "status", "created_at"),
        Index("ix_stored_files_idempotency", "workspace_id", "idempotency_key", unique=True),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    workspace_id: str = Field(sa_type=String(64))
    member_id: str = Field(default="", sa_type=String(64))
    key_id: str = Field(default="", sa_type=String(64))
    filename: str = Field(default="", sa_type=String(1024))
    purpose: str = Field(default="", sa_type=String(32))
    bytes: int = Field(default=0, sa_type=BigInteger)
    status: str = Field(default="uploading", sa_type=String(16))  # uploading | processed
    created_at: int = Field(sa_type=BigInteger)  # unix seconds
    expires_at: int | None = Field(default=None, sa_type=BigInteger)  # unix seconds; None: until deleted
    storage_key: str = Field(sa_type=String(256))
    # An upload's Idempotency-Key, hashed with its member (control_plane/files/idempotency.py):
    # unique per workspace, so a retry finds the file; None without a key.
    idempotency_key: str | None = Field(default=None, sa_type=String(64))
    # The upload's fingerprint (its fields and its file's SHA-256): a retry must be the same upload.
    fingerprint: str | None = Field(default=None, sa_type=String(64))


class StoredResponse(SQLModel, table=True):
    """A Responses API response its workspace keeps (``store``): what ``previous_response_id``
    continues, and what GET /v1/responses/{id} and its input_items answer. The fields of
    ``infery.v1.StoredResponse``; a row is found by its workspace and id together, so another
    workspace's id is never found. Rows past ``expires_at`` are never answered, and swept."""

    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_expires_at", "expires_at"),)

    workspace_id: str = Field(primary_key=True, sa_type=String(64))
    id: str = Field(primary_key=True, sa_type=String(128))
    model: str = Field(default="", sa_type=String(128))
    created_at: int = Field(sa_type=BigInteger)  # unix seconds
    expires_at: int = Field(sa_type=BigInteger)  # unix seconds
    response: bytes = Field(sa_type=LargeBinary)  # the response object's JSON, as the client got it
    input_items: bytes = Field(
        sa_type=LargeBinary
    )  # JSON array: the model's whole input, earlier turns first


class Batch(SQLModel, table=True):
    """A batch of ``/v1/batches`` (control_plane/batches/): OpenAI's batch object, and who made it.

    Scoped to its workspace like a file; ids are time-ordered like files' (``batch_`` +
    milliseconds + random bits). Its lines are :class:`BatchLine` rows; the batch object's
    counts are read from them while it runs, and kept here once it has ended
    (``completed_lines``, ``failed_lines``), since its lines are deleted ``ended_at`` +
    the retention later (``lines_swept``). Its credits and tokens are its lines' usage
    records'. ``lease_owner``/``lease_until`` say which worker validates or finalizes it
    (a worker that dies loses the lease at ``lease_until``, and another takes over).
    ``output_file_id``/``error_file_id`` are chosen before the files are written, so a
    finalizer that takes over from a dead one writes the same files again.
    """

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_workspace_id", "workspace_id", "id"),
        Index("ix_batches_status", "status"),
        Index("ix_batches_sweep", "lines_swept", "ended_at"),
    )

    id: str = Field(primary_key=True, sa_type=String(64))
    workspace_id: str = Field(sa_type=String(64))
    member_id: str = Field(default="", sa_type=String(64))
    key_id: str = Field(default="", sa_type=String(64))
    endpoint: str = Field(sa_type=String(64))
    input_file_id: str = Field(sa_type=String(64))
    completion_window: str = Field(default="24h", sa_type=String(16))
    metadata_: dict[str, str] | None = Field(
        default=None, sa_type=JSON, sa_column_kwargs={"name": "metadata"}
    )
    status: str = Field(default="validating", sa_type=String(16))
    errors: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON)
    output_file_id: str | None = Field(default=None, sa_type=String(64))
    error_file_id: str | None = Field(default=None, sa_type=String(64))
    created_at: int = Field(sa_type=BigInteger)  # unix seconds, as every timestamp below
    expires_at: int = Field(sa_type=BigInteger)
    in_progress_at: int | None = Field(default=None, sa_type=BigInteger)
    finalizing_at: int | None = Field(default=None, sa_type=BigInteger)
    completed_at: int | None = Field(default=None, sa_type=BigInteger)
    failed_at: int | None = Field(default=None, sa_type=BigInteger)
    expired_at: int | None = Field(default=None, sa_type=BigInteger)
    cancelling_at: int | None = Field(default=None, sa_type=BigInteger)
    cancelled_at: int | None = Field(default=None, sa_type=BigInteger)
    total: int = Field(default=0, sa_type=BigInteger)  # lines, once validated
    lease_owner: str = Field(default="", sa_type=String(64))
    lease_until_ms: int = Field(default=0, sa_type=BigInteger)
    completed_lines: int = Field(default=0, sa_type=BigInteger)  # once ended: request_counts
    failed_lines: int = Field(default=0, sa_type=BigInteger)
    ended_at: int | None = Field(default=None, sa_type=BigInteger)  # unix seconds it became final
    lines_swept: bool = False  # its lines deleted (control_plane/batches/worker.py ``sweep``)


class BatchLine(SQLModel, table=True):
    """One line of a batch: its request, then its answer.

    ``state``: ``pending`` (to send; not before ``not_before_ms``), ``leased`` (a worker has
    it until ``lease_until_ms``; a worker that dies loses it then), ``done`` (answered: the
    answer's status, body and request id, and the credits its ``x-credits-used`` said),
    ``failed`` (never sent: its model is not the workspace's; ``error`` says so). Workers
    claim lines with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and a single conditional
    UPDATE on SQLite (control_plane/batches/lines.py).
    """

    __tablename__ = "batch_lines"
    __table_args__ = (
        UniqueConstraint("batch_id", "line_no", name="uq_batch_lines_batch_id_line_no"),
        Index("ix_batch_lines_claim", "batch_id", "state", "not_before_ms"),
    )

    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer(), "sqlite")
    )
    batch_id: str = Field(sa_type=String(64))
    line_no: int = Field(sa_type=BigInteger)  # 1-based, as in the input file
    custom_id: str = Field(sa_type=String(512))
    request: bytes = Field(sa_type=LargeBinary)  # the line's body, JSON
    state: str = Field(default="pending", sa_type=String(16))
    attempts: int = 0
    not_before_ms: int = Field(default=0, sa_type=BigInteger)
    lease_owner: str = Field(default="", sa_type=String(64))
    lease_until_ms: int = Field(default=0, sa_type=BigInteger)
    status_code: int = 0
    request_id: str = Field(default="", sa_type=String(128))
    response: bytes | None = Field(default=None, sa_type=LargeBinary)  # the answer's body, as it came
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)  # {code, message} when not sent
    credits_pico: int = Field(default=0, sa_type=BigInteger)
    finished_at_ms: int = Field(default=0, sa_type=BigInteger)
