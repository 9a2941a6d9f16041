"""ext_proc/malloc_tuning.py: large buffers freed are reused by the next ones, not faulted in again.

Each case runs in a fresh interpreter, since the thresholds are process-wide: the same loop of
8 MiB buffers (made, written, freed, a few alive at once as a request's copies are) counts its
minor page faults with the tuning and without it.
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
def request(seed):
    body = bytes([seed]) * size          # the message
    parsed = bytearray(body)             # a copy of it
    sent = bytes(parsed)                 # and another
    return len(body) + len(parsed) + len(sent)
request(0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(20):
    request(i)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True, env=env
    )
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


def test_large_buffers_are_reused_instead_of_faulted_in_for_every_request() -> None:
    applied, tuned = _faults("tuned")
    assert applied
    _, untuned = _faults("untuned")
    pages_per_request = 3 * 8 * 1024 * 1024 // 4096
    # Without the tuning, the buffers are new pages more often than not.
    assert untuned > 20 * pages_per_request // 2, untuned
    # With it, the 20 requests reuse the first one's pages.
    assert tuned < pages_per_request // 4, tuned


def test_glibc_variables_set_by_an_operator_are_left_alone() -> None:
    for name in malloc_tuning.GLIBC_VARIABLES:
        assert malloc_tuning.keep_large_buffers({name: "1048576"}) is False
