"""ext_proc's logs as JSON lines, and one line per request from its usage record.

The request line carries what an operator needs to find a request and what happened
to it (request id, workspace, endpoint, models, provider, status, error code,
duration, tokens) and, by construction, nothing else: it is built from the usage
record's fields named in :data:`FIELDS`, which hold no key, key id, member, prompt
or completion. Failures are always logged; successes are sampled at
``INFERY_REQUEST_LOG_SAMPLE`` (1 = every request, 0 = none, 0.1 = one in ten).

The request line is on the hot path, so it skips the logging framework: orjson encodes
it straight from the record on the event loop (a few µs), lines are batched for up to
:data:`FLUSH_INTERVAL_S`, and a thread writes each batch to stdout, so a slow reader of
the log never blocks the loop. The process's other logs (stderr) keep ``logging``
(infery_proto.logs), as JSON lines or, with ``INFERY_LOG_FORMAT=text``, plain ones.
"""

from __future__ import annotations

import asyncio
import operator
import os
import queue
import random
import threading
import time
from collections.abc import Callable

import orjson
from infery_proto.v1 import usage_pb2

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
_VALUES = operator.attrgetter(*FIELDS)  # one C call for all of them
LOGGER = "infery.requests"  # the line's "logger", as the process's own lines name theirs
FLUSH_INTERVAL_S = 0.1
MAX_BATCH_BYTES = 256 * 1024  # a batch this large is handed to the writer at once


class _Clock:
    """ISO 8601 UTC times with milliseconds; the part up to the second is formatted once a second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"


class RequestLog:
    """Request lines to a file descriptor (stdout): encoded on the loop, written by a thread.

    ``sample``: the share of successful requests logged; failures always are.
    """

    def __init__(self, fd: int = 1, sample: float = 1.0, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._fd = fd
        self._interval = flush_interval_s
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._scheduled = False
        self._clock = _Clock()
        self._batches: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_batches, name="request-log", daemon=True)
        self._writer.start()
        self.dropped_batches = 0  # writes that failed (a closed stdout): the lines are lost, not retried
        if sample <= 0:
            self._sampled: Callable[[], bool] = lambda: False
        elif sample >= 1:
            self._sampled = lambda: True
        else:
            self._sampled = lambda: random.random() < sample

    def recorder(self, record: Recorder) -> Recorder:
        """``record`` that also logs the request (failures always, successes sampled)."""
        line, sampled = self.line, self._sampled

        def logged(rec: usage_pb2.UsageRecord) -> None:
            record(rec)
            if rec.status >= 400 or sampled():
                line(rec)

        return logged

    def line(self, rec: usage_pb2.UsageRecord) -> None:
        """Queue ``rec``'s line; it is written within the flush interval."""
        fields: dict[str, object] = {
            "time": self._clock.now(),
            "level": "INFO",
            "logger": LOGGER,
            "message": "request",
        }
        fields.update(zip(FIELDS, _VALUES(rec), strict=True))
        data = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= MAX_BATCH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_later(self._interval, self.flush)
            except RuntimeError:  # no event loop (a script, a test): write now
                self.flush()

    def flush(self) -> None:
        """Hand the pending lines to the writer thread."""
        self._scheduled = False
        if self._pending:
            batch, self._pending, self._pending_bytes = b"".join(self._pending), [], 0
            self._batches.put(batch)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is pending and stop the writer."""
        self.flush()
        self._batches.put(None)
        self._writer.join(timeout)

    def _write_batches(self) -> None:
        while (batch := self._batches.get()) is not None:
            view = memoryview(batch)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                self.dropped_batches += 1
