"""Reading an upload form chunk by chunk: the file part goes to the writer, fields are kept."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.files.upload_form import FormError, FormReader, TooLarge, boundary_of


class Collected:
    """A storage writer that keeps what it is given (the Writer protocol, in memory)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def write(self, buffer: bytes, /) -> int:
        self.pieces.append(bytes(buffer))
        return len(buffer)


def encode(fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None) -> tuple[bytes, bytes]:
    """A form as httpx (the openai SDK's transport) encodes it: (body, boundary)."""
    request = httpx.Request("POST", "http://x/v1/files", data=fields, files=files or {})
    return request.read(), boundary_of(request.headers["content-type"])


async def read(
    body: bytes, boundary: bytes, cuts: list[int], limit: int = 1 << 30
) -> tuple[FormReader, Collected]:
    writer = Collected()
    reader = FormReader(boundary, writer, limit)
    start = 0
    for cut in [*sorted({c for c in cuts if 0 < c < len(body)}), len(body)]:
        await reader.feed(body[start:cut])
        start = cut
    return reader, writer


@settings(max_examples=60, deadline=None)
@given(
    content=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
)
async def test_any_chunking_gives_the_same_form(content: bytes, cuts: list[int]):
    fields = {"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    body, boundary = encode(fields, {"file": ("data.jsonl", content)})
    reader, writer = await read(body, boundary, cuts)
    form = reader.finish()
    assert form.fields == fields
    assert form.filename == "data.jsonl"
    assert b"".join(writer.pieces) == content and form.bytes == len(content)


async def test_a_form_without_a_file_part_has_no_filename():
    body = b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--B--\r\n'
    reader, writer = await read(body, b"B", [])
    assert reader.finish().filename is None and writer.pieces == []


async def test_the_file_part_stops_at_the_first_byte_over_the_limit():
    body, boundary = encode({"purpose": "batch"}, {"file": ("big.bin", b"x" * 5000)})
    with pytest.raises(TooLarge):
        await read(body, boundary, list(range(0, len(body), 512)), limit=4999)
    reader, _writer = await read(body, boundary, [], limit=5000)  # exactly the limit is fine
    assert reader.finish().bytes == 5000


async def test_a_truncated_body_is_refused():
    body, boundary = encode({"purpose": "batch"}, {"file": ("a.txt", b"abc")})
    reader, _ = await read(body[:-10], boundary, [])
    with pytest.raises(FormError, match="ended before"):
        reader.finish()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"garbage without a boundary", "malformed"),
        (b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n", "Content-Disposition"),
        (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n1\r\n'
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n2\r\n--B--\r\n',
            "more than one",
        ),
        (
            b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + b"p" * 2000 + b"\r\n--B--\r\n",
            "too long",
        ),
    ],
)
async def test_malformed_forms_are_refused(body: bytes, message: str):
    with pytest.raises(FormError, match=message):
        await read(body, b"B", [])


def test_only_multipart_form_data_has_a_boundary():
    assert boundary_of('multipart/form-data; boundary="abc"') == b"abc"
    for content_type in ("application/json", "multipart/form-data", "multipart/mixed; boundary=x", ""):
        with pytest.raises(FormError):
            boundary_of(content_type)
