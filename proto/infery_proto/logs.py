"""How every Infery process writes its log: JSON lines on stderr, or plain text if asked.

A JSON line has ``time`` (ISO 8601, UTC, milliseconds: the same as Envoy's access log and
ext_proc's request lines), ``level``, ``logger``, ``message`` and the record's extra fields.
"""

from __future__ import annotations

import logging
import time

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(
    level: str,
    log_format: str,
    json_formatter: type[JsonFormatter] = JsonFormatter,
    text_formatter: type[logging.Formatter] = logging.Formatter,
) -> None:
    """The root logger's one handler; ``log_format`` is ``json`` or ``text``."""
    formatter: logging.Formatter
    if log_format == "text":
        formatter = text_formatter(TEXT_FORMAT)
    else:
        formatter = json_formatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        formatter.converter = time.gmtime
        formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
        formatter.default_msec_format = "%s.%03dZ"
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
