"""The bounds of a batch of kept responses (``infery.v1.ResponseStore``), one rule for both sides.

ext_proc carries the keeps that pile up while a ``KeepMany`` is in flight in its next one, and the
control plane writes the keeps that pile up while a write is in flight in its next transaction.
Both stop at :data:`BATCH_ROWS` rows and :data:`BATCH_BYTES` bytes (one larger row goes alone):
they bound a transaction's time, a statement's size and a call's message (gRPC refuses one over
4 MiB by default). The control plane refuses a ``KeepMany`` over them whole (INVALID_ARGUMENT: a
client's bug), so the two sides must count alike: hence here, where both import it (ext_proc and
the control plane never import each other).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from infery_proto.v1 import responses_pb2

BATCH_ROWS = 64
BATCH_BYTES = 4 << 20


def size_of(row: responses_pb2.StoredResponse) -> int:
    """The bytes ``row`` adds to a ``StoredResponses`` (its field tag, its length, itself): the
    sizes of a batch's rows add up to its message's size."""
    size = row.ByteSize()
    return 1 + max(1, (size.bit_length() + 6) // 7) + size  # tag, length as a varint (7 bits a byte)


def take(sizes: Iterable[int], rows: int = BATCH_ROWS, max_bytes: int = BATCH_BYTES) -> int:
    """How many of the rows of these sizes, from the first, the next batch carries: the first
    (whatever its size), and those after it while the batch stays within ``rows`` and ``max_bytes``."""
    count = total = 0
    for size in sizes:
        if count and (count == rows or total + size > max_bytes):
            break
        count += 1
        total += size
    return count


def split(sizes: Sequence[int], rows: int = BATCH_ROWS, max_bytes: int = BATCH_BYTES) -> list[int]:
    """The lengths of the consecutive batches that rows of these sizes go in, in order."""
    lengths: list[int] = []
    start = 0
    while start < len(sizes):
        lengths.append(take(sizes[start:], rows, max_bytes))
        start += lengths[-1]
    return lengths


def within(sizes: Sequence[int], rows: int = BATCH_ROWS, max_bytes: int = BATCH_BYTES) -> bool:
    """Whether rows of these sizes may go in one batch (what :func:`take` would put in one)."""
    return take(sizes, rows, max_bytes) == len(sizes)
