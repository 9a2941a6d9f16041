"""ext_proc/malloc_tuning.py: large buffers freed are reused by the next ones, not faulted in again.

Each case runs in a fresh interpreter, since the settings are process-wide: the same loop counts
its minor page faults with the tuning and without it. Two loops: 8 MiB buffers (made, written,
freed, a few alive at once as a request's copies are), and orjson parsing and serializing an
8 MiB body, whose working buffers reserve several times the body (beyond any mmap threshold).
"""

from __future__ import annotations

import subprocess
import sys

from ext_proc import malloc_tuning

LOOP = """
import resource, sys
from ext_proc import malloc_tuning
applied = malloc_tuning.keep_large_buffers() if sys.argv[1] == "tuned" else False
size = 8 * 1024 * 1024
REQUEST
request(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(20):
    request(i)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

COPIES = """
def request(seed):
    body = bytes([seed]) * size          # the message
    parsed = bytearray(body)             # a copy of it
    sent = bytes(parsed)                 # and another
    return len(body) + len(parsed) + len(sent)
"""

JSON = """
import orjson
def request(seed):
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": chr(97 + seed % 26) * size}]})
    return len(orjson.dumps(orjson.loads(body)))   # parsed, and serialized again
"""

PAGES_PER_REQUEST = 3 * 8 * 1024 * 1024 // 4096  # three buffers of the body's size


def _faults(mode: str, request: str = COPIES) -> tuple[bool, int]:
    loop = LOOP.replace("REQUEST", request)
    done = subprocess.run([sys.executable, "-c", loop, mode], capture_output=True, text=True, check=True)
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


def test_large_buffers_are_reused_instead_of_faulted_in_for_every_request() -> None:
    applied, tuned = _faults("tuned")
    assert applied
    _, untuned = _faults("untuned")
    pages_per_request = PAGES_PER_REQUEST
    # Without the tuning, the buffers are new pages more often than not.
    assert untuned > 20 * pages_per_request // 2, untuned
    # With it, the 20 requests reuse the first one's pages.
    assert tuned < pages_per_request // 4, tuned


def test_orjsons_working_buffers_are_reused_too() -> None:
    """orjson reserves ~12x the document to parse it and ~16x to serialize it: above any mmap
    threshold, so with mmap allowed they were new pages on every request (the step in CPU per
    byte past ~2 MB, bench/README.md)."""
    applied, tuned = _faults("tuned", JSON)
    assert applied
    _, untuned = _faults("untuned", JSON)
    assert untuned > 20 * PAGES_PER_REQUEST // 2, untuned
    assert tuned < PAGES_PER_REQUEST // 4, tuned


def test_glibc_variables_set_by_an_operator_are_left_alone() -> None:
    for name in malloc_tuning.GLIBC_VARIABLES:
        assert malloc_tuning.keep_large_buffers({name: "1048576"}) is False
