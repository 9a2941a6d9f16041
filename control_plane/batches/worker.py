"""The batch worker: validates batches, sends their lines through the listener, finalizes them.

Every state is in the store, so any number of workers share the work and any of them may
die at any moment:

- a batch being validated or finalized is one worker's by a lease on its row
  (records.take), renewed while it works; a dead worker's lease runs out and another
  starts that phase again (validation drops the lines it had written; finalization
  writes the same files again, under the ids it chose first: output.py);
- lines are claimed a few at a time (lines.claim: ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL), leased, renewed while in flight, and finished only by their owner. A
  dead worker's lines are claimed again once their lease runs out, and sent again
  with the same credential scope and therefore the same idempotency key: ext_proc
  replays the first answer (no charge) or says it is still running (sent later).

Each line goes through the Envoy listener (``INFERY_LISTENER_URL``) as a request of
the key that created the batch, carrying a :mod:`infery_proto.batch_assertion` signed with
the batch line key (read from the store), never a key: ext_proc does auth, limits (the
workspace's batch lane), routing, fallback and metering as for a live request.

Concurrency is bounded per worker (``INFERY_BATCH_CONCURRENCY``) and per workspace
(``INFERY_BATCH_WORKSPACE_CONCURRENCY``). A cancel is seen at the next claim round: no
new line starts after it; lines in flight finish and are written out.

A batch that ends with lines unanswered (cancelled, expired) is finalized only once no
live worker holds one of its lines, and its finalizer first *seals* them (lines.seal: every
unfinished line becomes its own, so none is claimed behind it). A worker may have died
after a line was served and charged but before it wrote the answer; the finalizer asks the
listener about each line a worker ever claimed with a recovery probe (the line's
credential and ``BATCH_RECOVER_HEADER``, ext_proc/exchange.py ``_recover_line``): the
stored answer comes back as a replay at no charge and goes to the output file; a line never
served is answered ``batch_line_not_sent`` (and stays so for a worker that sends it late).
So a batch's files hold every line that was served, and its ``credits_used`` and ``usage``
(the sums of its lines' usage records: records.py) count each once.

Lines of batches that ended more than ``INFERY_BATCH_LINES_RETENTION_DAYS`` ago are
deleted by a sweep of its own (:meth:`Worker.sweep`), a bounded number per pass in short
transactions, beside the claims rather than before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import orjson
from infery_proto import batch_assertion
from infery_proto.wire import (
    BATCH_LINE_NOT_SENT,
    BATCH_RECOVER_HEADER,
    CREDITS_USED_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    RETRY_AFTER_MS_HEADER,
)
from starlette.concurrency import run_in_threadpool

from control_plane.batches import lines, output, records
from control_plane.batches.metrics import BatchMetrics
from control_plane.batches.settings import BatchSettings
from control_plane.batches.validation import MAX_ERRORS, MAX_LINES, LineChecker, LineError, numbered_lines
from control_plane.decimals import to_pico
from control_plane.files import records as file_records
from control_plane.files.storage import FileStorage, ObjectMissing
from control_plane.safe_errors import describe
from control_plane.store.db import SessionFactory
from control_plane.store.tables import Batch, Workspace

log = logging.getLogger("infery.batches")

# A line's retries: 1 s, 2 s, 4 s ... up to a minute (a 429 says its own wait).
BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
# Answers after which the line is sent again later, its attempts not counted: the lane is full,
# or the line is still running from a worker that died (its idempotency key is held).
_WAIT_CODES = frozenset({"rate_limit_exceeded", "idempotency_key_in_use"})
# How long a finalizer waits for the usage records of a batch's answers to reach the store (they
# come from ext_proc's spool, usually within a second): the object's credits and usage are their
# sums, complete when the batch says it has ended (they stay those sums if one comes later).
USAGE_WAIT_S = 30.0
# The retention sweep: batches looked at and lines deleted per pass, lines per transaction (a
# short one: on SQLite a claim waits for it), and the pause between passes (short after a full one).
SWEEP_BATCHES, SWEEP_LINES, SWEEP_CHUNK = 50, 20_000, 1_000
SWEEP_INTERVAL_S = 60.0
DAY_S = 86_400


def worker_id() -> str:
    """Who holds a lease: this host and process, and a random part (a restarted pid is another worker)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Worker:
    settings: BatchSettings
    sessions: SessionFactory
    storage: FileStorage
    line_key: bytes
    client: httpx.AsyncClient
    metrics: BatchMetrics = field(default_factory=BatchMetrics)
    clock: Callable[[], float] = time.time
    owner: str = field(default_factory=worker_id)
    _in_flight: dict[int, str] = field(default_factory=dict)  # line id -> workspace id
    _per_workspace: Counter[str] = field(default_factory=Counter)
    _per_batch: Counter[str] = field(default_factory=Counter)  # lines in flight per batch id
    _phases: dict[str, asyncio.Task[None]] = field(
        default_factory=dict
    )  # batch id -> its validation/finalization
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _slot_freed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def lease_ms(self) -> int:
        return int(self.settings.batch_lease_s * 1000)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Rounds until cancelled: housekeeping every poll, and a claim round whenever a slot frees."""
        renewer = asyncio.create_task(self._renew_forever())
        sweeper = asyncio.create_task(self._sweep_forever())
        try:
            next_housekeeping = 0.0
            while True:
                try:
                    if time.monotonic() >= next_housekeeping:
                        await self.housekeeping()
                        next_housekeeping = time.monotonic() + self.settings.batch_poll_s
                    await self.claim_round()
                except Exception as exc:
                    log.warning(
                        "batch worker round failed (next in %ss): %s",
                        self.settings.batch_poll_s,
                        describe(exc),
                    )
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), self.settings.batch_poll_s)
        finally:
            renewer.cancel()
            sweeper.cancel()
            for task in [*self._tasks, *self._phases.values()]:
                task.cancel()

    async def housekeeping(self) -> None:
        """Start the validations and finalizations that are due and no other worker holds."""
        now, now_ms = int(self.clock()), self.now_ms()

        def _due() -> list[tuple[Batch, lines.Tally]]:
            with self.sessions() as session:
                found = [
                    b
                    for b in records.active(session)
                    if b.lease_until_ms < now_ms and b.id not in self._phases
                ]
                return [(b, lines.tally(session, b.id, now_ms)) for b in found]

        for batch, tally in await run_in_threadpool(_due):
            phase = _phase_due(batch, tally, now)
            if phase is None:
                continue
            status, work = phase
            taken = await run_in_threadpool(self._take, batch.id, batch.status)
            if taken:
                task = asyncio.create_task(self._phase(batch.id, status, work))
                self._phases[batch.id] = task

    def _take(self, batch_id: str, status: str) -> bool:
        with self.sessions() as session:
            return records.take(session, batch_id, status, self.owner, self.now_ms(), self.lease_ms)

    async def _phase(self, batch_id: str, status: str, work: str) -> None:
        try:
            batch = await run_in_threadpool(self._get, batch_id)
            if batch is None or batch.lease_owner != self.owner:
                return
            if work == "validate":
                await self.validate(batch)
            else:
                await self.finalize(batch, status, work)
        except Exception as exc:
            log.warning("batch %s: %s failed (another round retries it): %s", batch_id, work, describe(exc))
        finally:
            self._phases.pop(batch_id, None)

    def _get(self, batch_id: str) -> Batch | None:
        with self.sessions() as session:
            return records.get(session, batch_id)

    # -- validating ------------------------------------------------------------------------

    async def validate(self, batch: Batch) -> None:
        """Read the input file line by line into the batch's lines, or fail the batch with its errors."""
        await run_in_threadpool(self._forget_lines, batch.id)  # a dead validator's partial work
        allowed = await run_in_threadpool(self._allowed_models, batch.workspace_id)
        checker = LineChecker(batch.endpoint, allowed)
        errors: list[LineError] = []
        chunk: list[lines.NewLine] = []
        count = 0
        stored = await run_in_threadpool(
            file_records.find, self.sessions, batch.workspace_id, batch.input_file_id, int(self.clock())
        )
        try:
            if stored is None:
                raise ObjectMissing(batch.input_file_id)
            pieces = await self.storage.read(stored.storage_key)
        except ObjectMissing:
            errors.append(
                LineError("invalid_file", f"The input file {batch.input_file_id} no longer exists.", None)
            )
        else:
            async for line_no, raw in numbered_lines(pieces):
                count += 1
                if count > MAX_LINES:
                    errors.append(
                        LineError(
                            "too_many_requests", f"A batch holds at most {MAX_LINES} requests.", line_no
                        )
                    )
                    break
                checked = (
                    LineError("line_too_long", "This line is longer than a request may be.", line_no)
                    if raw is None
                    else checker.check(line_no, raw)
                )
                if isinstance(checked, LineError):
                    if len(errors) < MAX_ERRORS:
                        errors.append(checked)
                    continue
                if not errors:
                    chunk.append(checked)
                    if len(chunk) >= lines.INSERT_CHUNK:
                        await run_in_threadpool(self._insert, batch.id, chunk)
                        chunk = []
            if count == 0:
                errors.append(LineError("empty_file", "The input file has no requests.", None))
        now = int(self.clock())
        if errors:
            await run_in_threadpool(self._forget_lines, batch.id)
            moved = await run_in_threadpool(
                self._move,
                batch.id,
                records.VALIDATING,
                status=records.FAILED,
                failed_at=now,
                ended_at=now,
                errors=[e.as_dict() for e in errors],
                lease_owner="",
                lease_until_ms=0,
            )
            if moved:
                self.metrics.batches.labels(records.FAILED).inc()
                log.info("batch %s failed validation (%d errors)", batch.id, len(errors))
            return
        if chunk:
            await run_in_threadpool(self._insert, batch.id, chunk)
        moved = await run_in_threadpool(
            self._move,
            batch.id,
            records.VALIDATING,
            status=records.IN_PROGRESS,
            in_progress_at=now,
            total=count,
            lease_owner="",
            lease_until_ms=0,
        )
        if not moved:  # cancelled meanwhile: the finalization sees its lines
            await run_in_threadpool(self._release, batch.id)
        log.info("batch %s: %d lines to send", batch.id, count)

    def _forget_lines(self, batch_id: str) -> None:
        with self.sessions() as session:
            lines.forget_lines(session, batch_id)
            session.commit()

    def _insert(self, batch_id: str, chunk: list[lines.NewLine]) -> None:
        with self.sessions() as session:
            lines.insert_lines(session, batch_id, chunk)
            session.commit()

    def _allowed_models(self, workspace_id: str) -> frozenset[str] | None:
        with self.sessions() as session:
            workspace = session.get(Workspace, workspace_id)
        if workspace is None or not workspace.allowed_models:
            return None
        return frozenset(workspace.allowed_models)

    def _move(self, batch_id: str, expected: str, **values: Any) -> bool:
        with self.sessions() as session:
            return records.move(session, batch_id, self.owner, expected, **values)

    def _release(self, batch_id: str) -> None:
        with self.sessions() as session:
            batch = records.get(session, batch_id)
            if batch is not None and batch.lease_owner == self.owner:
                records.move(session, batch_id, self.owner, batch.status, lease_owner="", lease_until_ms=0)

    # -- finalizing ------------------------------------------------------------------------

    async def finalize(self, batch: Batch, from_status: str, final: str) -> None:
        """Account for every line, write the output and error files and end the batch as ``final``.

        Each step may be done again by a finalizer that takes over from one that died: the
        files' ids are chosen first and kept on the row, lines are sealed and asked about
        again (a probe is idempotent), and the files are written again under the same ids.
        """
        now = int(self.clock())
        status = from_status
        reserved: dict[str, str] = {}
        if batch.output_file_id is None or batch.error_file_id is None:
            output_id, error_id = output.reserve(self.clock())
            reserved = {"output_file_id": output_id, "error_file_id": error_id}
        if final == records.COMPLETED and from_status == records.IN_PROGRESS:
            moved = await run_in_threadpool(
                self._move, batch.id, status, status=records.FINALIZING, finalizing_at=now, **reserved
            )
            if not moved:
                return  # cancelled meanwhile: the next round finalizes it as such
            status = records.FINALIZING
        elif reserved and not await run_in_threadpool(self._move, batch.id, status, **reserved):
            return
        for name, value in reserved.items():
            setattr(batch, name, value)
        if final in (records.CANCELLED, records.EXPIRED):
            await self.account_for_lines(batch)
        await self._await_usage_records(batch.id)
        tally = await run_in_threadpool(self._tally, batch.id)
        completed, failed = records.counts(final, tally)
        made = await output.write_files(self.sessions, self.storage, batch, final, self.clock)
        stamp = {
            records.COMPLETED: "completed_at",
            records.CANCELLED: "cancelled_at",
            records.EXPIRED: "expired_at",
        }[final]
        ended = int(self.clock())
        moved = await run_in_threadpool(
            self._move,
            batch.id,
            status,
            status=final,
            output_file_id=made[0],
            error_file_id=made[1],
            completed_lines=completed,
            failed_lines=failed,
            ended_at=ended,
            lease_owner="",
            lease_until_ms=0,
            **{stamp: ended},
        )
        if moved:
            self.metrics.batches.labels(final).inc()
            log.info("batch %s %s", batch.id, final)

    async def account_for_lines(self, batch: Batch) -> None:
        """Before a batch ends with lines unanswered: make them all this finalizer's (once no
        live worker holds one), then learn what became of each one a worker ever claimed.

        Raises TimeoutError when lines stay unknown past a request's whole time (the
        listener unreachable, a line still running): the next round tries again.
        """
        deadline = time.monotonic() + self.settings.batch_request_timeout_s
        while True:
            # This worker's own lines of the batch still in flight finish first, as another's do.
            if not self._per_batch[batch.id] and await run_in_threadpool(self._seal, batch.id) == 0:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("lines of the batch are still in flight")
            await asyncio.sleep(self.settings.batch_poll_s)
        unknown = await run_in_threadpool(self._to_recover, batch.id)
        share = asyncio.Semaphore(self.settings.batch_workspace_concurrency)
        attempt = 0
        while unknown:
            known = await asyncio.gather(*(self._recover(batch, line, share) for line in unknown))
            unknown = [line for line, done in zip(unknown, known, strict=True) if not done]
            if not unknown:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(unknown)} lines are still unknown")
            attempt += 1
            await asyncio.sleep(_backoff_ms(attempt) / 1000)

    async def _recover(self, batch: Batch, line: lines.Claimed, share: asyncio.Semaphore) -> bool:
        """Ask the listener what became of a sealed line; whether it is now known (and recorded)."""
        async with share:
            outcome, answer = await self._probe(batch, line)
        if outcome == "wait":
            return False
        self.metrics.recovered.labels(outcome).inc()
        if outcome == "answered":
            assert answer is not None
            await self._finish_answered(line, answer)
        elif outcome == "unknown":
            assert answer is not None
            log.warning(
                "batch %s line %d: the listener cannot say whether it was served (%d %s)",
                batch.id,
                line.line_no,
                answer.status_code,
                _error_code(answer),
            )
        return True

    async def _probe(self, batch: Batch, line: lines.Claimed) -> tuple[str, httpx.Response | None]:
        """The listener's recovery answer for a line: ``answered`` (its stored answer, replayed),
        ``not_sent``, ``wait`` (still running, or no answer now) or ``unknown`` (refused)."""
        try:
            answer = await self._post(batch, line, recover=True)
        except httpx.TransportError:
            return "wait", None
        code = _error_code(answer)
        if code == BATCH_LINE_NOT_SENT:
            return "not_sent", answer
        if answer.headers.get(IDEMPOTENT_REPLAYED_HEADER) == "true":
            return "answered", answer
        if code in _WAIT_CODES or answer.status_code >= 500:
            return "wait", answer
        return "unknown", answer

    async def _await_usage_records(self, batch_id: str) -> None:
        """Until the usage record of every answered line is in the store (or :data:`USAGE_WAIT_S`)."""
        deadline = time.monotonic() + USAGE_WAIT_S
        while await run_in_threadpool(self._answered_without_record, batch_id):
            if time.monotonic() > deadline:
                log.warning("batch %s: usage records still on their way; it ends without them", batch_id)
                return
            await asyncio.sleep(min(self.settings.batch_poll_s, 0.2))

    def _seal(self, batch_id: str) -> int:
        """Seal the batch's lines; how many other workers still hold with a live lease."""
        with self.sessions() as session:
            lines.seal(session, batch_id, self.owner, self.now_ms(), self.lease_ms)
            return lines.held_elsewhere(session, batch_id, self.owner, self.now_ms())

    def _to_recover(self, batch_id: str) -> list[lines.Claimed]:
        with self.sessions() as session:
            return lines.to_recover(session, batch_id, self.owner)

    def _answered_without_record(self, batch_id: str) -> int:
        with self.sessions() as session:
            return lines.answered_without_record(session, batch_id)

    def _tally(self, batch_id: str) -> lines.Tally:
        with self.sessions() as session:
            return lines.tally(session, batch_id, self.now_ms())

    # -- lines -----------------------------------------------------------------------------

    async def claim_round(self) -> None:
        """Claim lines for the free slots, oldest batch first, within each workspace's share."""
        free = self.settings.batch_concurrency - len(self._in_flight)
        if free <= 0:
            return
        now = int(self.clock())

        def _claim() -> list[tuple[Batch, list[lines.Claimed]]]:
            taken: list[tuple[Batch, list[lines.Claimed]]] = []
            room = free
            per_workspace = Counter(self._per_workspace)
            with self.sessions() as session:
                for batch in records.runnable(session, now):
                    share = self.settings.batch_workspace_concurrency - per_workspace[batch.workspace_id]
                    want = min(room, share)
                    if want <= 0:
                        continue
                    claimed = lines.claim(session, batch.id, self.owner, want, self.now_ms(), self.lease_ms)
                    if claimed:
                        taken.append((batch, claimed))
                        room -= len(claimed)
                        per_workspace[batch.workspace_id] += len(claimed)
                    if room <= 0:
                        break
            return taken

        for batch, claimed in await run_in_threadpool(_claim):
            log.debug("batch %s: %d lines claimed", batch.id, len(claimed))
            for line in claimed:
                self._in_flight[line.id] = batch.workspace_id
                self._per_workspace[batch.workspace_id] += 1
                self._per_batch[batch.id] += 1
                self.metrics.in_flight.inc()
                task = asyncio.create_task(self._send(batch, line))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: Batch, line: lines.Claimed) -> None:
        try:
            await self.send(batch, line)
        except Exception as exc:
            log.warning("batch %s line %d: %s (sent again later)", batch.id, line.line_no, describe(exc))
            await run_in_threadpool(self._retry_later, line.id, self.now_ms() + int(BACKOFF_S * 1000))
        finally:
            workspace = self._in_flight.pop(line.id, "")
            self._per_workspace[workspace] -= 1
            if self._per_workspace[workspace] <= 0:
                del self._per_workspace[workspace]
            self._per_batch[batch.id] -= 1
            if self._per_batch[batch.id] <= 0:
                del self._per_batch[batch.id]
            self.metrics.in_flight.dec()
            self._slot_freed.set()

    async def _post(self, batch: Batch, line: lines.Claimed, *, recover: bool = False) -> httpx.Response:
        """The line's request to the listener, as the batch's key (``recover``: a recovery probe)."""
        credential = batch_assertion.sign(
            self.line_key,
            batch_assertion.BatchLine(
                batch.workspace_id, batch.key_id, batch.member_id, batch.id, line.custom_id, batch.endpoint
            ),
            self.clock(),
        )
        headers = {batch_assertion.HEADER: credential, "content-type": "application/json"}
        if recover:
            headers[BATCH_RECOVER_HEADER] = "1"
        url = self.settings.listener_url.rstrip("/") + batch.endpoint
        return await self.client.post(url, content=line.request, headers=headers)

    async def send(self, batch: Batch, line: lines.Claimed) -> None:
        """One line through the listener, as the batch's key; its answer recorded, or sent again later."""
        try:
            answer = await self._post(batch, line)
        except httpx.TransportError as exc:
            if line.attempts < self.settings.batch_max_attempts:
                self.metrics.lines.labels("retried").inc()
                await run_in_threadpool(
                    self._retry_later, line.id, self.now_ms() + _backoff_ms(line.attempts)
                )
                return
            await self._give_up(batch, line, exc)
            return
        code = _error_code(answer)
        if code in _WAIT_CODES:
            self.metrics.lines.labels("retried").inc()
            await run_in_threadpool(
                self._retry_later, line.id, self.now_ms() + _wait_ms(answer, line.attempts)
            )
            return
        if answer.status_code >= 500 and line.attempts < self.settings.batch_max_attempts:
            self.metrics.lines.labels("retried").inc()
            await run_in_threadpool(self._retry_later, line.id, self.now_ms() + _backoff_ms(line.attempts))
            return
        await self._finish_answered(line, answer)

    async def _give_up(self, batch: Batch, line: lines.Claimed, exc: httpx.TransportError) -> None:
        """The listener never answered the line's sendings: the answer may still have been served
        (the connection lost on the way back), so it is asked for before the line fails."""
        outcome, answer = await self._probe(batch, line)
        if outcome == "wait":  # no saying yet: the line is sent again later
            self.metrics.lines.labels("retried").inc()
            await run_in_threadpool(self._retry_later, line.id, self.now_ms() + _backoff_ms(line.attempts))
            return
        self.metrics.recovered.labels(outcome).inc()
        if outcome == "answered":
            assert answer is not None
            await self._finish_answered(line, answer)
            return
        body = orjson.dumps(
            {
                "error": {
                    "code": "upstream_unavailable",
                    "message": f"The gateway did not answer: {type(exc).__name__}.",
                }
            }
        )
        await self._finish(line, 503, "", body, 0)

    async def _finish_answered(self, line: lines.Claimed, answer: httpx.Response) -> None:
        """The line's result is the listener's answer: its status, request id, body and charge."""
        credits = _credits_pico(answer.headers.get(CREDITS_USED_HEADER))
        request_id = answer.headers.get(REQUEST_ID_HEADER, "")
        await self._finish(line, answer.status_code, request_id, answer.content, credits)

    async def _finish(
        self, line: lines.Claimed, status: int, request_id: str, body: bytes, credits_pico: int
    ) -> None:
        def _write() -> bool:
            with self.sessions() as session:
                return lines.finish(
                    session,
                    line.id,
                    self.owner,
                    status_code=status,
                    request_id=request_id,
                    response=body,
                    credits_pico=credits_pico,
                    now_ms=self.now_ms(),
                )

        if await run_in_threadpool(_write):
            self.metrics.lines.labels("completed" if 200 <= status < 300 else "failed").inc()
        else:
            self.metrics.lines.labels("lost").inc()

    def _retry_later(self, line_id: int, not_before_ms: int) -> None:
        with self.sessions() as session:
            lines.retry_later(session, line_id, self.owner, not_before_ms)

    async def _renew_forever(self) -> None:
        """Keep the leases of the lines and phases in hand while they last."""
        while True:
            await asyncio.sleep(self.settings.batch_lease_s / 3)
            try:
                await run_in_threadpool(self._renew)
            except Exception as exc:
                log.warning("renewing leases failed: %s", describe(exc))

    def _renew(self) -> None:
        until = self.now_ms() + self.lease_ms
        with self.sessions() as session:
            lines.renew(session, self.owner, list(self._in_flight), until)
            for batch_id in list(self._phases):
                batch = records.get(session, batch_id)
                if batch is not None and batch.lease_owner == self.owner:
                    records.move(session, batch_id, self.owner, batch.status, lease_until_ms=until)
                    lines.renew_held(session, batch_id, self.owner, until)  # a finalizer's sealed lines

    # -- retention -------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        """A sweep pass now and every :data:`SWEEP_INTERVAL_S` (a full pass: another soon)."""
        while True:
            try:
                deleted = await run_in_threadpool(self.sweep)
            except Exception as exc:
                log.warning(
                    "sweeping old batch lines failed (next in %ss): %s", SWEEP_INTERVAL_S, describe(exc)
                )
                deleted = 0
            await asyncio.sleep(self.settings.batch_poll_s if deleted >= SWEEP_LINES else SWEEP_INTERVAL_S)

    def sweep(self) -> int:
        """One pass: delete the lines of batches that ended more than the retention ago, at most
        :data:`SWEEP_LINES` in transactions of :data:`SWEEP_CHUNK`; how many. The batches, their
        counts and their files stay. Several workers may sweep at once: a line goes once."""
        ended_before = int(self.clock() - self.settings.batch_lines_retention_days * DAY_S)
        deleted = 0
        with self.sessions() as session:
            for batch_id in records.due_for_sweeping(session, ended_before, SWEEP_BATCHES):
                while deleted < SWEEP_LINES:
                    chunk = min(SWEEP_CHUNK, SWEEP_LINES - deleted)
                    gone = lines.sweep_some(session, batch_id, chunk)
                    deleted += gone
                    self.metrics.lines_swept.inc(gone)
                    if gone < chunk:
                        records.swept(session, batch_id)
                        break
                if deleted >= SWEEP_LINES:
                    break
        if deleted:
            log.info("swept %d lines of batches that ended before %d", deleted, ended_before)
        return deleted


def _phase_due(batch: Batch, tally: lines.Tally, now: int) -> tuple[str, str] | None:
    """(the status it is in, what to do: validate or the final status) for a batch no worker holds."""
    if batch.status == records.VALIDATING:
        return batch.status, "validate"
    if batch.status == records.CANCELLING and tally.in_flight == 0:
        return batch.status, records.CANCELLED
    if batch.status == records.FINALIZING:  # a finalizer that died
        return batch.status, records.COMPLETED
    if batch.status == records.IN_PROGRESS:
        if tally.unfinished == 0:
            return batch.status, records.COMPLETED
        if now >= batch.expires_at and tally.in_flight == 0:
            return batch.status, records.EXPIRED
    return None


def _error_code(answer: httpx.Response) -> str:
    if answer.status_code < 400:
        return ""
    try:
        return str(orjson.loads(answer.content)["error"]["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return ""


def _backoff_ms(attempts: int) -> int:
    return int(min(MAX_BACKOFF_S, BACKOFF_S * 2 ** max(0, attempts - 1)) * 1000)


def _wait_ms(answer: httpx.Response, attempts: int) -> int:
    hinted = answer.headers.get(RETRY_AFTER_MS_HEADER) or ""
    if hinted.isdigit():
        return int(hinted)
    seconds = answer.headers.get("retry-after") or ""
    return int(seconds) * 1000 if seconds.isdigit() else _backoff_ms(attempts)


def _credits_pico(value: str | None) -> int:
    """The line's charge as the listener said it (``x-credits-used``: the usage record's figure)."""
    if not value:
        return 0
    try:
        return to_pico(Decimal(value))
    except (InvalidOperation, ValueError):
        return 0
