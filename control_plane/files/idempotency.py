"""``Idempotency-Key`` on uploads: a retried upload is the same file, never a second copy.

ext_proc sees only an upload's headers, so the files service keeps the key, on the file's own
row (``StoredFile.idempotency_key``, unique per workspace): a retry of a stored upload is
answered with the same file object (and ``idempotent-replayed: true``), once its form has been
read and found the same upload; the same key with another upload is ``422
idempotency_key_reused``, and with an upload still under way ``409 idempotency_key_in_use``
(the gateway's codes, as for every endpoint). An upload that fails leaves no row, so the key is
free for the retry; a deleted or expired file frees its key too.

Keys are scoped as ext_proc scopes its own by default: the workspace and the member (the key is
stored hashed with the member's id), so no one replays another member's upload by guessing a
key. "The same upload" is its fields and its file's SHA-256, not its bytes on the wire: a
multipart boundary differs on every retry.
"""

from __future__ import annotations

import hashlib

from control_plane.files.errors import FilesError
from control_plane.files.storage import Writer
from control_plane.files.upload_form import UploadForm

MAX_KEY_LENGTH = 255  # as ext_proc's (ext_proc/idempotency.py)


def scope(member_id: str, key: str) -> str:
    """The key as stored: hashed with its member, so a row never holds a client's string."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise FilesError(
            400,
            "invalid_request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            "Idempotency-Key",
        )
    return hashlib.sha256(f"{member_id}\n{key}".encode()).hexdigest()


class HashingWriter:
    """Passes the file's bytes to ``inner`` (None: nowhere, a replay's), hashing them on the way."""

    __slots__ = ("_inner", "digest")

    def __init__(self, inner: Writer | None) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()

    async def write(self, buffer: bytes, /) -> int:
        self.digest.update(buffer)
        return await self._inner.write(buffer) if self._inner is not None else len(buffer)


def fingerprint(form: UploadForm, file_digest: str) -> str:
    """The upload as a retry must repeat it: its text fields, its file's name and SHA-256."""
    fields = "\n".join(f"{k}={v}" for k, v in sorted(form.fields.items()))
    return hashlib.sha256(f"{fields}\n{form.filename}\n{file_digest}".encode()).hexdigest()


def in_use() -> FilesError:
    return FilesError(
        409,
        "idempotency_key_in_use",
        "An upload with this Idempotency-Key is still being processed.",
        "Idempotency-Key",
    )


def reused() -> FilesError:
    return FilesError(
        422,
        "idempotency_key_reused",
        "This Idempotency-Key was already used with a different upload.",
        "Idempotency-Key",
    )
