"""Answering Envoy within its ext_proc message timeout, or asking for more time.

Envoy gives ext_proc a short ``message_timeout`` per message (5 s by default), so
that a stopped ext_proc costs a request seconds. A phase that legitimately takes
longer (fetching an image URL, a slow Redis) sends ``override_message_timeout``
first: Envoy then waits up to ``max_message_timeout`` for the answer. A stopped
or blocked process sends nothing and is still noticed fast.

Cost: the work is started by hand (:func:`start`). When it finishes without waiting
(the usual case with in-process state) nothing else happens; only work that waits is
handed to a task and raced against the deadline (~12 us, against the I/O it waits for).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MessageDeadline:
    """When to ask Envoy for more time, and how much: INFERY_EXT_PROC_(MAX_)MESSAGE_TIMEOUT_S,
    the variables the control plane configures Envoy from (``control_plane/settings.py``)."""

    message_timeout_s: float = 5.0
    max_message_timeout_s: float = 60.0

    @property
    def extend_after_s(self) -> float:
        """Half the timeout: the extension reaches Envoy well before the timer fires."""
        return self.message_timeout_s / 2


class Suspended(Generic[T]):
    """Work that was started by hand and is now waiting (on I/O, a timer, ...)."""

    __slots__ = ("_pending", "_work")

    def __init__(self, work: Coroutine[Any, Any, T], pending: Any) -> None:
        self._work, self._pending = work, pending

    async def answers(self, extend_after_s: float, extension: T) -> AsyncIterator[T]:
        """Yields the work's result; first ``extension`` when it is still running after
        ``extend_after_s``. Closing the iterator early cancels the work."""
        task = asyncio.ensure_future(_continue(self._work, self._pending))
        try:
            done, _ = await asyncio.wait((task,), timeout=extend_after_s)
            if not done:
                yield extension
            yield await task
        finally:
            if not task.done():
                task.cancel()


def start(work: Coroutine[Any, Any, T]) -> T | Suspended[T]:
    """Runs ``work`` until it finishes (its result) or first waits (a :class:`Suspended`).

    The usual request body phase never waits: it then costs one ``send``, where an
    async generator or a task per request would cost 3-12 us.
    """
    try:
        pending = work.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    return Suspended(work, pending)


async def _continue(work: Coroutine[Any, Any, T], pending: Any) -> T:
    return await _resume(work, pending)  # type: ignore[no-any-return]


@types.coroutine
def _resume(work: Coroutine[Any, Any, T], pending: Any) -> Generator[Any, Any, T]:
    """Continues a coroutine that was started by hand and is waiting on ``pending``,
    exactly as ``await`` would have (what ``yield from`` does)."""
    while True:
        try:
            try:
                sent = yield pending
            except BaseException as exc:  # cancellation included: the work sees it
                pending = work.throw(exc)
            else:
                pending = work.send(sent)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]
