"""glibc's malloc, told to keep the memory of large request bodies for the next one.

A prompt of megabytes passes through a few buffers of its size (the gRPC message, the
parsed body, the body sent back to Envoy). glibc serves an allocation above its mmap
threshold with a fresh ``mmap`` and returns it with ``munmap`` when freed; the threshold
adapts to the largest chunk freed, but memory freed at the top of the heap is handed back
to the kernel as soon as more than twice that threshold is free there. Either way the next
request's buffers are new pages: the kernel faults in and zeroes every 4 KiB page again.
Measured in process (``python -m bench.body_sizes``), that was 10,000-14,000 minor faults
and half of the CPU of an 8 MB request, and the reason its cost per byte grew past 1 MB.

With mmap switched off (``M_MMAP_MAX`` 0) and a trim threshold of 1 GiB, large buffers come
from the heap and go back to it, and the next request reuses the same pages. Session 8 set the
mmap threshold to 32 MiB instead, glibc's largest: that left orjson's working buffers mapped per
call, since orjson reserves ~12x a document to parse it and ~16x to serialize it (touching about
1x), so past ~2 MB each request faulted its pages in again (4,100 faults at 8 MB, 8,200 at 16 MB)
and the CPU per byte doubled past 1 MB. Without mmap those reservations are heap address space
whose untouched pages are never resident, and the trim threshold is set above what a large body
reserves (~16x: 1 GiB covers bodies to ~60 MB), so the touched pages stay for the next request.

The price is memory kept: ext_proc's resident set does not fall after a burst of large requests
(it stays at the burst's peak, reused by the next ones) unless more than 1 GiB is free at the top
of its heap. The peak itself is no higher: a buffer's untouched pages are not resident either way.

An operator who sets glibc's own variables (``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``) keeps them: nothing is changed then. Elsewhere than glibc (musl has
no such knobs) nothing is changed either.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

# mallopt(3) parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

TRIM_THRESHOLD = 1024 * 1024 * 1024
GLIBC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_large_buffers(environ: Mapping[str, str] = os.environ) -> bool:
    """Set the thresholds above; whether they were set (False: glibc variables given, or no glibc)."""
    if any(name in environ for name in GLIBC_VARIABLES):
        return False
    libc = ctypes.CDLL(None)  # the process's own C library
    # glibc has gnu_get_libc_version; musl's mallopt is a no-op.
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
