"""Validators for OpenAI's request and response schemas, built from OpenAI's own OpenAPI spec.

The spec declares OpenAPI 3.1 (JSON Schema 2020-12) but still carries OpenAPI 3.0's
``nullable: true``; a 2020-12 validator ignores that keyword, so it is rewritten into ``null``
branches once, when the spec is loaded. Real OpenAI responses break a few strict points of the
spec (``system_fingerprint: null``, no ``message.refusal`` / ``choice.logprobs``, errors without
``param``/``code``, a Responses ``usage``/``user`` of null); the *lenient* variant relaxes exactly
those, and is what responses are checked with. Requests are checked *strict*: undeclared
top-level fields are rejected, as the real API does.

Parsing the 3 MB YAML takes about a second, so the rewritten spec is cached as JSON in the
user's cache directory (keyed by the file's size and mtime); nothing is read until first use.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from simulators.conformance.paths import OPENAI_SPEC

SPEC_URI = "urn:openai-openapi"
_ANNOTATIONS = ("description", "title", "default", "example", "examples", "deprecated")
_TYPE_ONLY_EXCLUDES = ("$ref", "oneOf", "anyOf", "allOf", "enum", "const")

# The batch object's fields that are null until they happen (the spec's own example shows them so).
BATCH_NULLABLE = (
    "errors",
    "output_file_id",
    "error_file_id",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
# (schema, path to the sub-schema, action, argument): what real responses leave out or null.
LENIENT_PATCHES: tuple[tuple[str, tuple[str | int, ...], str, str | None], ...] = (
    ("CreateChatCompletionResponse", ("properties", "system_fingerprint"), "nullable", None),
    ("CreateChatCompletionStreamResponse", ("properties", "system_fingerprint"), "nullable", None),
    ("ChatCompletionResponseMessage", (), "unrequire", "refusal"),
    ("CreateChatCompletionResponse", ("properties", "choices", "items"), "unrequire", "logprobs"),
    (
        "CreateChatCompletionResponse",
        ("properties", "choices", "items", "properties", "logprobs", "anyOf", 0),
        "unrequire",
        "refusal",
    ),
    (
        "CreateChatCompletionStreamResponse",
        ("properties", "choices", "items", "properties", "logprobs", "anyOf", 0),
        "unrequire",
        "refusal",
    ),
    ("Error", (), "unrequire", "param"),
    ("Error", (), "unrequire", "code"),
    # The Responses API (openai-python's live-recorded snapshots): ``user`` and, until the
    # answer is complete, ``usage`` are null; usage has no ``cache_write_tokens``.
    ("ModelResponseProperties", ("properties", "user"), "nullable", None),
    ("Response", ("allOf", 2, "properties", "usage"), "nullable", None),
    ("ResponseUsage", ("properties", "input_tokens_details"), "unrequire", "cache_write_tokens"),
    # The batch object: the spec's own example (``x-oaiMeta``) has these null until they happen.
    *(("Batch", ("properties", name), "nullable", None) for name in BATCH_NULLABLE),
)


def nullable_to_2020_12(node: Any) -> Any:
    """Rewrite every OpenAPI 3.0 ``nullable: true`` below ``node`` into a JSON Schema null branch."""
    if isinstance(node, list):
        return [nullable_to_2020_12(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: nullable_to_2020_12(value) for key, value in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    kind = node.get("type")
    type_only = not any(key in node for key in _TYPE_ONLY_EXCLUDES)
    if type_only and isinstance(kind, str):
        node["type"] = [kind, "null"]
        return node
    if type_only and isinstance(kind, list):
        node["type"] = kind if "null" in kind else [*kind, "null"]
        return node
    outside = {key: node.pop(key) for key in list(node) if key in _ANNOTATIONS or key.startswith("x-")}
    if "enum" in node and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    return {"anyOf": [node, {"type": "null"}], **outside}


def lenient(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with LENIENT_PATCHES applied."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    for name, path, action, argument in LENIENT_PATCHES:
        node: Any = schemas.get(name)
        for step in path:
            if isinstance(step, int):
                node = node[step] if isinstance(node, list) and len(node) > step else None
            else:
                node = node.get(step) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if action == "unrequire" and argument in node.get("required", []):
            node["required"] = [r for r in node["required"] if r != argument]
        elif action == "nullable":
            replacement = nullable_to_2020_12({**node, "nullable": True})
            node.clear()
            node.update(replacement)
    return spec


def discriminated_to_any_of(node: Any) -> Any:
    """Rewrite every ``oneOf`` that has an OpenAPI ``discriminator`` into ``anyOf``, below ``node``.

    OpenAPI picks the branch a ``discriminator`` names; JSON Schema's ``oneOf`` knows no
    discriminator and refuses an instance valid under two branches, which some real requests
    are: a Responses input message without ``type`` and with a content list is both an
    ``EasyInputMessage`` and an ``InputMessage``, and the API takes it.
    """
    if isinstance(node, list):
        return [discriminated_to_any_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: discriminated_to_any_of(value) for key, value in node.items()}
    if "discriminator" in node and "oneOf" in node and "anyOf" not in node:
        node["anyOf"] = node.pop("oneOf")
    return node


# Bumped when the rewrites applied on load change, so that a cache of the old ones is not read.
_REWRITES = 2


def load_spec(path: Path = OPENAI_SPEC) -> dict[str, Any]:
    """The spec with ``nullable`` and discriminated ``oneOf`` rewritten, from the JSON cache when
    it is current."""
    stat = path.stat()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = f"openai-spec-{stat.st_size}-{int(stat.st_mtime)}-r{_REWRITES}.json"
    cache = cache_root / "infery-conformance" / name
    with contextlib.suppress(OSError, ValueError):
        cached: dict[str, Any] = json.loads(cache.read_bytes())
        return cached
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as f:
        spec: dict[str, Any] = discriminated_to_any_of(nullable_to_2020_12(yaml.load(f, Loader=loader)))
    with contextlib.suppress(OSError, TypeError, ValueError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(spec, default=str))  # stdlib: the spec has ints beyond 64 bits
        tmp.replace(cache)
    return spec


@dataclass
class Problem:
    """One reason a request is invalid: a JSON-pointer-ish location and a message."""

    path: list[str | int]
    message: str
    rule: str = ""

    @property
    def param(self) -> str | None:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or None


def error_line(error: Any) -> str:
    """A one-line description of a jsonschema error: where, then what."""
    return f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message[:300]}"


class OpenAISpec:
    """Compiled validators for OpenAI's schemas; the spec is read on first use, each validator once."""

    def __init__(self, path: Path = OPENAI_SPEC) -> None:
        self._path = path
        self._specs: dict[bool, dict[str, Any]] = {}
        self._validators: dict[tuple[str, bool, bool], Draft202012Validator] = {}

    def _spec(self, relaxed: bool) -> dict[str, Any]:
        if relaxed not in self._specs:
            self._specs[relaxed] = lenient(self._spec(False)) if relaxed else load_spec(self._path)
        return self._specs[relaxed]

    def validator(self, schema: str, *, strict: bool = False, lenient: bool = False) -> Draft202012Validator:
        """Draft 2020-12 (OpenAPI 3.1's dialect) over a registry holding the whole spec.

        ``strict`` rejects top-level properties the schema does not declare.
        """
        key = (schema, strict, lenient)
        if key not in self._validators:
            spec = self._spec(lenient)
            if schema not in spec["components"]["schemas"]:
                raise KeyError(schema)
            registry: Registry[Any] = Registry().with_resource(
                SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
            )
            root: dict[str, Any] = {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}
            if strict:
                root["unevaluatedProperties"] = False
            self._validators[key] = Draft202012Validator(
                root, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
        return self._validators[key]

    def properties(self, schema: str) -> dict[str, Any]:
        """The declared properties of an object schema (a multipart form's fields and their types)."""
        found: dict[str, Any] = self._spec(False)["components"]["schemas"][schema].get("properties", {})
        return found

    def request_problems(self, schema: str, body: Any) -> list[Problem]:
        """Schema errors, undeclared top-level fields included (the real API rejects those)."""
        problems = []
        for error in self.validator(schema, strict=True).iter_errors(body):
            problem = _describe(error)
            if error.validator in ("required", "unevaluatedProperties"):
                problem.rule = str(error.validator)
            problems.append(problem)
        return problems

    def response_problems(self, schema: str, doc: Any) -> list[str]:
        """Every way ``doc`` breaks ``schema`` as real responses are held to it (lenient)."""
        return [error_line(e) for e in self.validator(schema, lenient=True).iter_errors(doc)]


def _describe(error: Any) -> Problem:
    """Follow anyOf/oneOf failures into the alternative the instance was meant to be: the one not
    ruled out by its `type`/`role` tag; when every alternative is, list the tags allowed."""
    while error.context:
        branches: dict[Any, list[Any]] = {}
        for child in error.context:
            branches.setdefault(child.schema_path[0] if child.schema_path else 0, []).append(child)
        plausible = [errs for errs in branches.values() if not any(_tag_mismatch(c) for c in errs)]
        if not plausible:
            tags = [c for errs in branches.values() for c in errs if _tag_mismatch(c)]
            allowed: list[Any] = []
            for tag in tags:
                values = tag.validator_value if tag.validator == "enum" else [tag.validator_value]
                allowed += [v for v in values if v not in allowed]
            listed = ", ".join(repr(v) for v in allowed)
            message = f"Invalid value: {tags[0].instance!r}. Supported values are: {listed}."
            return Problem(list(tags[0].absolute_path), message, "enum")
        errors = max(plausible, key=lambda errs: max(len(c.relative_path) for c in errs))
        error = max(errors, key=lambda c: len(c.relative_path))
    return Problem(list(error.absolute_path), str(error.message), str(error.validator))


def _tag_mismatch(error: Any) -> bool:
    path = error.relative_path
    return error.validator in ("enum", "const") and len(path) == 1 and path[0] in ("type", "role")
