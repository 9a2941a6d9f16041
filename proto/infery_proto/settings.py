"""What every Infery process's settings model shares: INFERY_* variables read and validated once.

Each process (the control plane, ext_proc, the ``infery`` CLI) reads its environment through
ONE subclass of :class:`InferySettings`: a field ``admin_port`` is the variable
``INFERY_ADMIN_PORT``, its ``description`` says what it does. From the same fields come the
process's ``--help`` (:meth:`InferySettings.help_text`) and README.md's tables
(:meth:`InferySettings.markdown_table`), so neither can drift from what is read.

A bad value is a :class:`SettingsError` whose message names the variable, never a traceback.
An empty variable counts as unset (``INFERY_ADMIN_TOKEN= make up`` sets no empty token).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

import pydantic_settings
from pydantic import BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

PREFIX = "INFERY_"

LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.strip().upper() if isinstance(value, str) else value),
]

# Values safe to repeat in an error message: a number or a flag is never a secret; a string
# may be one (a token, a database URL with its password), so its value is not repeated.
_ECHOED_TYPES = (int, float, bool)


def version() -> str:
    """The installed infery-gateway's version (``--version`` of every process)."""
    try:
        return importlib.metadata.version("infery-gateway")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class SettingsError(ValueError):
    """One or more variables with bad values; the message names each."""


class _EnvFrom(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (a manifest's env, a child's)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class InferySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Self:
        """The settings from ``env`` (default: this process's environment); ``overrides`` (fields
        set by command-line flags) win over it and are validated the same way."""
        try:
            values = _EnvFrom(cls, os.environ if env is None else env)()
            return cls.model_validate({**values, **(overrides or {})})
        except ValidationError as exc:
            raise SettingsError(_describe(cls, exc)) from None
        except pydantic_settings.SettingsError as exc:  # a value that could not even be decoded
            raise SettingsError(str(exc)) from None

    @classmethod
    def command_line(cls, prog: str, description: str, **options: Any) -> argparse.ArgumentParser:
        """The process's parser, the same for every process: ``--help`` lists every variable with
        its default and meaning, ``--version`` the package's. A process with flags adds them."""
        parser = argparse.ArgumentParser(
            prog=prog,
            description=description,
            epilog=cls.help_text(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **options,
        )
        parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
        return parser

    @classmethod
    def from_command_line(cls, prog: str, description: str, argv: list[str] | None = None) -> Self:
        """The settings of a process without flags of its own; a bad variable exits 2 naming it."""
        parser = cls.command_line(prog, description)
        parser.parse_args(argv)
        try:
            return cls.from_env()
        except SettingsError as exc:
            parser.error(str(exc))

    @classmethod
    def variable(cls, field: str) -> str:
        return PREFIX + field.upper()

    @classmethod
    def variables(cls) -> list[tuple[str, str, str]]:
        """(variable, default, description) of every setting, in declaration order."""
        return [
            (cls.variable(name), _default(field), field.description or "")
            for name, field in cls.model_fields.items()
        ]

    @classmethod
    def help_text(cls, title: str = "environment variables") -> str:
        """The ``--help`` epilog: one entry per variable with its default and meaning."""
        lines = [f"{title} (an empty one counts as unset):"]
        for name, default, description in cls.variables():
            lines.append(f"  {name} (default: {default})")
            lines += textwrap.wrap(description, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
        return "\n".join(lines)

    @classmethod
    def markdown_table(cls) -> str:
        """README.md's table of the same variables."""
        rows = ["| variable | default | what |", "| --- | --- | --- |"]
        for name, default, description in cls.variables():
            shown = default if default == "unset" else f"`{default}`"
            rows.append(f"| `{name}` | {shown} | {description} |")
        return "\n".join(rows)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == "" or value == frozenset():
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    return str(value)


def _echoed(annotation: Any) -> bool:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return all(_echoed(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in _ECHOED_TYPES


def _describe(cls: type[InferySettings], exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        context = error.get("ctx", {}).get("error")
        message = str(context) if isinstance(context, ValueError) else error["msg"]
        if not error["loc"]:  # a check across variables: its message names them
            problems.append(message)
            continue
        name = str(error["loc"][0])
        field = cls.model_fields.get(name)
        shown = f" (got {error['input']!r})" if field is not None and _echoed(field.annotation) else ""
        problems.append(f"{cls.variable(name)}: {message}{shown}")
    return "; ".join(problems)
