"""ext_proc's instructions per request in the real gateway: ``python -m bench.insitu_instructions``.

``make bench`` measures ext_proc's CPU time per request, which on a shared two-core machine
moves by a factor of two between sittings (the simulator's own CPU per request, whose code does
not change, has ranged from 0.10 to 0.28 ms). Instructions do not move. This bench runs the
whole gateway (control plane, Envoy, the OpenAI simulator) with ext_proc under callgrind and
sends non-streamed chats through Envoy's listener from ``--concurrency`` clients. It dumps
callgrind's counters after a warm-up, after ``--first`` requests and after ``--then`` more, so
the instructions per request are those of each interval alone (start-up and configuration
excluded), and their agreement says that timers and batching (usage reports leave in batches)
were amortized.

What it counts: every instruction ext_proc's process runs in user space, on all its threads
(the HTTP/2 server, protobuf, the exchange, usage reports, metrics, logs). What it does not:
the kernel's side of its reads and writes, and the cycles each instruction takes, which is
where a loaded machine differs from a quiet one.

Under callgrind ext_proc runs about fifty times slower, so keep the concurrency modest: each of
Envoy's ext_proc messages must still be answered within its timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench import gateway
from bench.launch import start_simulator
from bench.run import OPENAI_MODEL, SIM_KEY, prompt
from bench.settings import Settings
from infery.stack import Stack

_SUMMARY = re.compile(rb"^summary: (\d+)$", re.MULTILINE)


def _dump(pid: int, tag: str) -> None:
    subprocess.run(["callgrind_control", "--dump=" + tag, str(pid)], check=True, capture_output=True)


def _instructions(out_dir: Path, pid: int, part: int) -> int:
    """The instructions counted between a dump and the one before it."""
    path = out_dir / f"callgrind.{pid}.{part}"
    for _ in range(100):  # callgrind writes the dump on its next scheduling point
        if path.exists() and (match := _SUMMARY.search(path.read_bytes())):
            return int(match.group(1))
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no dump {path}")


def _ext_proc_pid(stack: Stack) -> int:
    (pid,) = [p.popen.pid for name, p in stack.processes.items() if name.startswith("ext_proc")]
    return pid


def measure(
    work_dir: Path, concurrency: int, first: int, then: int, words: int, api: str = "chat"
) -> tuple[float, float]:
    """Instructions per request over the first interval and over the second. ``api``: ``chat``
    (/v1/chat/completions) or ``responses`` (/v1/responses, kept as OpenAI's default ``store``)."""
    wrapper = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={work_dir}/callgrind.%p")
    with contextlib.ExitStack() as cleanup:
        sim = start_simulator("sim_openai", "openai", SIM_KEY, 0.0, work_dir)
        cleanup.callback(sim.process.stop)
        stack, token = gateway.start(work_dir / "gateway", 1, 1, ext_proc_wrapper=wrapper)
        cleanup.callback(stack.stop)
        models = ((OPENAI_MODEL, OPENAI_MODEL),)
        upstream = gateway.Upstream("sim-openai", "openai", sim.base_url, SIM_KEY, models)
        probe = {"messages": [{"role": "user", "content": "hello"}]}
        key = gateway.configure(stack, token, [upstream], probe)
        text = prompt(words)
        if api == "responses":
            url, body = f"{stack.base_url}/responses", {"model": OPENAI_MODEL, "input": text}
        else:
            url = f"{stack.base_url}/chat/completions"
            body = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": text}]}
        clients = [
            cleanup.enter_context(httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=120))
            for _ in range(concurrency)
        ]
        pool = cleanup.enter_context(ThreadPoolExecutor(concurrency))

        def client(index: int, count: int) -> None:
            for _ in range(count):
                answer = clients[index].post(url, json=body)
                answer.raise_for_status()

        def run(requests: int) -> None:
            shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
            list(pool.map(client, range(concurrency), shares))

        pid = _ext_proc_pid(stack)
        run(max(concurrency * 10, 50))  # imports, caches, the channels: what every request finds
        _dump(pid, "warm")
        run(first)
        _dump(pid, "first")
        run(then)
        _dump(pid, "then")
        return _instructions(work_dir, pid, 2) / first, _instructions(work_dir, pid, 3) / then


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.insitu_instructions", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--first", type=int, default=400, help="requests in the first interval")
    parser.add_argument("--then", type=int, default=1200, help="requests in the second interval")
    parser.add_argument("--words", type=int, default=Settings().prompt_words, help="words in the prompt")
    parser.add_argument("--api", choices=("chat", "responses"), default="chat")
    parser.add_argument("--out", type=Path, help="keep callgrind's dumps here (callgrind_annotate them)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        work = args.out or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="insitu-")))
        work.mkdir(parents=True, exist_ok=True)
        first, then = measure(work, args.concurrency, args.first, args.then, args.words, args.api)
    print(
        f"ext_proc instructions per non-streamed {args.api} request, in situ at c{args.concurrency}:"
        f" {first / 1e3:,.1f}k over {args.first} requests, {then / 1e3:,.1f}k over {args.then}",
        flush=True,
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "1")  # dict and set layouts, and so instructions, repeatable
    main()
