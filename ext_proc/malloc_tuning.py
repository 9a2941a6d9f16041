"""glibc's malloc, told to keep the memory of large request bodies for the next one.

A prompt of megabytes passes through a few buffers of its size (the gRPC message, the
parsed body, the body sent back to Envoy). glibc serves an allocation above its mmap
threshold with a fresh ``mmap`` and returns it with ``munmap`` when freed; the threshold
adapts to the largest chunk freed, but memory freed at the top of the heap is handed back
to the kernel as soon as more than twice that threshold is free there. Either way the next
request's buffers are new pages: the kernel faults in and zeroes every 4 KiB page again.
Measured in process (``python -m bench.body_sizes``), that was 10,000-14,000 minor faults
and half of the CPU of an 8 MB request, and the reason its cost per byte grew past 1 MB.

With a fixed mmap threshold of 32 MiB (glibc's largest) and a trim threshold of 64 MiB,
large buffers come from the heap and go back to it, and the next request reuses the same
pages. The price is memory kept: up to 64 MiB freed at the top of the heap stays resident
(reused by the next large request) instead of going back to the kernel at once.

Buffers above 32 MiB (orjson's working buffers for a large document are several times the
document) are still mapped per use. An operator who sets glibc's own variables
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) keeps them: nothing is changed then.
Elsewhere than glibc (musl has no such knobs) nothing is changed either.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 128 * 1024 * 1024
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_buffers(environ: Mapping[str, str] = os.environ) -> bool:
    """Set the thresholds above; whether they were set (False: glibc variables given, or no glibc)."""
    if any(name in environ for name in GLIBC_VARIABLES):
        return False
    libc = ctypes.CDLL(None)  # the process's own C library
    # glibc has gnu_get_libc_version; musl's mallopt is a no-op.
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
