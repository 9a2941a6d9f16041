"""Adapter over the shared conformance kit, so the simulators reject what the real APIs reject.

The kit (`validate.py`, `provider_validate.py`) is a set of CLI scripts outside the package, in
``../shared/conformance`` next to the repository (or ``$INFERY_CONFORMANCE_DIR``). We load private
copies of them by file path and call their checks in process: the OpenAI spec is parsed once (and
cached as JSON in the user cache dir, since YAML parsing takes most of a second); the provider
checks are file-based, so request bodies go through a temporary file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

ENV_VAR = "INFERY_CONFORMANCE_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent
OPENAI_REQUEST_SCHEMAS = ("CreateChatCompletionRequest", "CreateEmbeddingRequest", "CreateImageRequest")


def kit_dir() -> Path | None:
    """The conformance directory, or None on a machine without the shared kit.

    `$INFERY_CONFORMANCE_DIR`, when set, is the only place looked at (so it can also turn the kit off).
    """
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "conformance"
    if (path / "validate.py").is_file() and (path / "provider_validate.py").is_file():
        return path
    return None


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


class OpenAISpec:
    """Compiled validators for OpenAI request/response schemas, built once."""

    def __init__(self, directory: Path) -> None:
        self._module = load_module(directory / "validate.py", "_infery_sim_validate")
        self._spec = self._load_spec(directory / "openai-openapi.yaml")
        self._validators: dict[tuple[str, bool, bool], Any] = {}

    def _load_spec(self, path: Path) -> Any:
        stat = path.stat()
        cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache = cache_root / "infery-simulators" / f"openai-spec-{stat.st_size}-{int(stat.st_mtime)}.json"
        with contextlib.suppress(OSError, ValueError):
            return json.loads(cache.read_bytes())
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open() as f:
            spec = self._module._fix_nullable(yaml.load(f, Loader=loader))
        with contextlib.suppress(OSError, TypeError, ValueError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(spec, default=str))  # stdlib: the spec has ints beyond 64 bits
            tmp.replace(cache)
        return spec

    def validator(self, schema: str, *, strict: bool = False, lenient: bool = False) -> Any:
        key = (schema, strict, lenient)
        if key not in self._validators:
            spec = self._module.apply_lenient(self._spec) if lenient else self._spec
            self._validators[key] = self._module.make_validator(spec, schema, strict)
        return self._validators[key]

    def request_problems(self, schema: str, body: Any) -> list[Problem]:
        """Schema errors, undeclared top-level fields included (the real API rejects those)."""
        problems = []
        for error in self.validator(schema, strict=True).iter_errors(body):
            problem = _describe(error)
            problem.rule = (
                error.validator if error.validator in ("required", "unevaluatedProperties") else problem.rule
            )
            problems.append(problem)
        return problems

    def response_problems(self, schema: str, doc: Any) -> list[str]:
        errors = self.validator(schema, lenient=True).iter_errors(doc)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors]


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


class ProviderChecks:
    """In-process use of provider_validate.py's Anthropic and Gemini checks."""

    def __init__(self, directory: Path) -> None:
        module = load_module(directory / "provider_validate.py", "_infery_sim_provider_validate")

        class Collecting(module.Report):  # type: ignore[name-defined,misc]
            def finish(self, label: str) -> Any:
                return self

        module.__dict__["Report"] = Collecting  # this module object is ours alone
        self._module = module

    def _run(self, check: str, payload: bytes, *args: Any) -> list[str]:
        with _temp_file(payload) as path:
            report = getattr(self._module, check)(path, *args)
        if isinstance(report, int):  # the kit's own usage error (e.g. schema file missing)
            return [f"{check} could not run (exit {report})"]
        return list(report.errors)

    def anthropic_request(self, body: Any, *, beta: bool = False) -> list[str]:
        return self._run("anthropic_request", orjson.dumps(body), beta)

    def gemini_request(self, body: Any, *, api: str = "v1beta") -> list[str]:
        return self._run("gemini_request", orjson.dumps(body), "v1" if api == "v1" else "v1beta")

    def gemini_message(self, message: str, body: Any) -> list[str]:
        """Parse `body` as the v1beta proto `message` (e.g. EmbedContentRequest)."""
        glm = self._module._glm("v1beta")
        report = self._module.Report()
        self._module._proto_parse(getattr(glm, message), body, report, message)
        return list(report.errors)

    def warm_up(self, kind: str) -> None:
        """Import what the checks import lazily, so the first request is not the slow one."""
        if kind == "anthropic":
            self.anthropic_request(
                {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
            )
        elif kind == "google":
            self.gemini_request({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
            self.gemini_message("EmbedContentRequest", {})

    def response(self, check: str, text: str | bytes) -> list[str]:
        """check: anthropic-response | anthropic-sse | gemini-response | gemini-sse."""
        payload = text.encode() if isinstance(text, str) else text
        return self._run(check.replace("-", "_"), payload)


@contextlib.contextmanager
def _temp_file(payload: bytes) -> Iterator[str]:
    with tempfile.NamedTemporaryFile(prefix="infery-sim-", suffix=".txt") as f:
        f.write(payload)
        f.flush()
        yield f.name


@dataclass
class Kit:
    openai: OpenAISpec | None
    providers: ProviderChecks


def load_kit(kind: str) -> Kit | None:
    """The validators a simulator of `kind` needs; None (with a warning) when the kit is absent."""
    directory = kit_dir()
    if directory is None:
        print(
            f"warning: conformance kit not found (set {ENV_VAR}); request validation is OFF",
            file=sys.stderr,
            flush=True,
        )
        return None
    kit = Kit(OpenAISpec(directory) if kind == "openai" else None, ProviderChecks(directory))
    kit.providers.warm_up(kind)
    if kit.openai is not None:
        for schema in OPENAI_REQUEST_SCHEMAS:
            kit.openai.request_problems(schema, {"model": "m", "messages": [], "input": "x", "prompt": "x"})
    return kit
