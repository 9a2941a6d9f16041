"""The process around a simulator: CLI options, pacing on the wire, signals, self-contained checks."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from sim_checks import AUTH

import simulators
from simulators.testing import REPO_ROOT, SimulatorProcess

STREAMS = {
    "openai": (
        "/v1/chat/completions",
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}]},
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "m",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "one two three four five"}],
        },
    ),
    "google": (
        "/v1beta/models/g:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "one two three four five"}]}]},
    ),
}
DELAY_S = 0.06


@pytest.mark.parametrize("kind", sorted(STREAMS))
def test_chunks_arrive_paced(kind):
    path, body = STREAMS[kind]
    with SimulatorProcess(kind, chunk_delay_ms=DELAY_S * 1000) as sim:
        started = time.monotonic()
        arrivals = []
        with httpx.stream("POST", sim.url + path, json=body, headers=AUTH[kind]) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                arrivals.append((time.monotonic() - started, chunk.count(b"data: ")))
    events = sum(n for _, n in arrivals)
    duration = DELAY_S * (events - 1)
    assert events >= 8
    # Pacing is proven by lower bounds only, which a busy machine cannot break (it only delays reads):
    # the stream cannot end before its pauses add up, and its reads are spread over several pauses
    # (an unpaced server's events arrive in one burst).
    assert arrivals[-1][0] >= duration * 0.9, arrivals
    assert arrivals[-1][0] - arrivals[0][0] >= DELAY_S * 2, arrivals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(sig):
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators", "--kind", "anthropic", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("ready anthropic http://127.0.0.1:"), line
        process.send_signal(sig)
        assert process.wait(10) == 0
        assert "Traceback" not in process.stderr.read() if process.stderr else True
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_no_validate_accepts_what_the_api_rejects():
    with SimulatorProcess("openai", validate=False) as sim:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "not_a_param": True}
        response = httpx.post(
            sim.base_url + "/chat/completions", json=body, headers={"authorization": "Bearer x"}
        )
        assert response.status_code == 200
        assert httpx.get(sim.url + "/_sim/health").json() == {"kind": "openai", "validate": False}


def test_validation_needs_nothing_outside_the_package(tmp_path):
    """The checks' material ships inside `simulators`: with an empty cache and the old kit variable
    pointing nowhere, a simulator still rejects what the real API rejects and replays fixtures."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "INFERY_CONFORMANCE_DIR": str(tmp_path / "nothing")}
    with SimulatorProcess("anthropic", env=env) as sim:
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "n": 3}
        response = httpx.post(sim.url + "/v1/messages", json=body, headers=AUTH["anthropic"])
        assert response.status_code == 400, response.text
        assert httpx.get(sim.url + "/_sim/health").json() == {"kind": "anthropic", "validate": True}
        sim.script([{"action": "replay", "fixture": "anthropic_recorded_stream.sse"}])


def test_startup_failure_is_reported():
    with pytest.raises(RuntimeError, match="did not start"):
        SimulatorProcess("openai", host="203.0.113.1", startup_timeout=10).start()


def test_in_process_server_with_uvicorn_config_can_reset():
    application = simulators.app("google", api_key=None, validate=False, chunk_delay_ms=0)
    server = uvicorn.Server(simulators.uvicorn_config(application, host="127.0.0.1", port=0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        httpx.post(url + "/_sim/script", json=[{"action": "reset"}]).raise_for_status()
        path, body = STREAMS["google"]
        with pytest.raises(httpx.TransportError):
            httpx.post(url + path, json=body, headers=AUTH["google"])
        assert httpx.post(url + path, json=body, headers=AUTH["google"]).status_code == 200
    finally:
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
