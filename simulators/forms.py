"""Multipart forms as a provider reads them: fields and files, and the JSON view a schema checks.

OpenAI's audio endpoints take ``multipart/form-data``; its OpenAPI spec describes the form as
a JSON schema (``CreateTranscriptionRequest``), so :func:`as_json` turns the form's strings into
the types the schema declares (``temperature`` a number, ``stream`` a boolean,
``timestamp_granularities[]`` an array, a file a string) before it is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header


class FormProblem(ValueError):
    """Not a multipart form the provider can read."""


@dataclass
class UploadedFile:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, Any] = field(default_factory=dict)  # name -> str, or list[str] for name[]
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the request log keeps: the fields, and each file's name, type and size."""
        files = {
            name: {"filename": f.filename, "content_type": f.content_type, "size": len(f.data)}
            for name, f in self.files.items()
        }
        return {"form": self.fields, "files": files}


def parse(content_type: str, body: bytes) -> Form:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise FormProblem("expected a multipart/form-data body with a boundary")
    form = Form()
    state: dict[str, Any] = {"headers": [], "field": b"", "value": b"", "data": []}

    def header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def header_end() -> None:
        state["headers"].append((state["field"].lower(), state["value"]))
        state["field"] = state["value"] = b""

    def part_data(data: bytes, start: int, end: int) -> None:
        state["data"].append(data[start:end])

    def part_end() -> None:
        headers = dict(state["headers"])
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode()
        value = b"".join(state["data"])
        state["headers"], state["data"] = [], []
        if b"filename" in disposition:
            content_type = parse_options_header(headers.get(b"content-type", b""))[0].decode()
            form.files[name] = UploadedFile(disposition[b"filename"].decode(), content_type, value)
        elif name.endswith("[]"):
            form.fields.setdefault(name[:-2], []).append(value.decode())
        else:
            form.fields[name] = value.decode()

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_header_field": header_field,
            "on_header_value": header_value,
            "on_header_end": header_end,
            "on_part_data": part_data,
            "on_part_end": part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as err:  # python-multipart's parse errors
        raise FormProblem(f"malformed multipart body: {err}") from None
    return form


def as_json(form: Form, properties: dict[str, Any]) -> dict[str, Any]:
    """The form as the JSON object its schema describes (``properties`` of the request schema)."""
    out: dict[str, Any] = {name: "<binary>" for name in form.files}
    for name, value in form.fields.items():
        out[name] = _typed(value, _types(properties.get(name, {})))
    return out


def _types(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type")
    found = {kind} if isinstance(kind, str) else set(kind or [])
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key) or []:
            found |= _types(branch)
    return found


def _typed(value: Any, types: set[str]) -> Any:
    if isinstance(value, list):
        return value
    if "boolean" in types and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if "integer" in types:
        try:
            return int(value)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            pass
    if "array" in types:
        return [value]
    return value
