"""ext_proc's logs as JSON lines, and one line per request from its usage record.

The request line carries what an operator needs to find a request and what happened
to it (request id, workspace, endpoint, models, provider, status, error code,
duration, tokens) and, by construction, nothing else: it is built from the usage
record's fields named in :data:`FIELDS`, which hold no key, key id, member, prompt
or completion. Failures are always logged; successes are sampled at
``INFERY_REQUEST_LOG_SAMPLE`` (1 = every request, 0 = none, 0.1 = one in ten).

``INFERY_LOG_FORMAT=text`` keeps the old plain-text lines (default ``json``).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping

from infery_proto.v1 import usage_pb2
from pythonjsonlogger.json import JsonFormatter

log = logging.getLogger("infery.requests")

Recorder = Callable[[usage_pb2.UsageRecord], None]

# What a request line holds: ids and outcomes only (never key_id, member_id, bodies).
FIELDS = (
    "request_id",
    "workspace_id",
    "endpoint",
    "model_requested",
    "model_used",
    "provider",
    "fallback_from",
    "status",
    "error_code",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "credits",
    "stream",
    "idempotent_replay",
    "usage_estimated",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str, env: Mapping[str, str] | None = None) -> None:
    """The process's logging: JSON lines (time, level, logger, message, extras), or text if asked."""
    env = os.environ if env is None else env
    handler = logging.StreamHandler()
    if env.get("INFERY_LOG_FORMAT", "json").strip().lower() == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    logging.basicConfig(level=level.upper(), handlers=[handler])


def sample_rate(env: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if env is None else env).get("INFERY_REQUEST_LOG_SAMPLE", "1")
    try:
        rate = float(raw)
    except ValueError:
        raise ValueError(f"INFERY_REQUEST_LOG_SAMPLE must be a number from 0 to 1, got {raw!r}") from None
    if not 0 <= rate <= 1:
        raise ValueError(f"INFERY_REQUEST_LOG_SAMPLE must be a number from 0 to 1, got {raw!r}")
    return rate


def fields(rec: usage_pb2.UsageRecord) -> dict[str, object]:
    return {name: getattr(rec, name) for name in FIELDS}


def recorder(record: Recorder, sample: float) -> Recorder:
    """``record`` that also logs the request (failures always, successes at ``sample``)."""
    if sample <= 0:
        sampled: Callable[[], bool] = lambda: False  # noqa: E731
    elif sample >= 1:
        sampled = lambda: True  # noqa: E731
    else:
        sampled = lambda: random.random() < sample  # noqa: E731

    def logged(rec: usage_pb2.UsageRecord) -> None:
        record(rec)
        if (rec.status >= 400 or sampled()) and log.isEnabledFor(logging.INFO):
            log.info("request", extra=fields(rec))

    return logged
