"""`SimulatorProcess`: a simulated provider in a subprocess, for tests.

    with SimulatorProcess("anthropic", api_key="sk-ant-test") as sim:
        sim.script([{"status": 529}])
        ...  # point the code under test at sim.base_url
        assert sim.requests()[0]["headers"]["x-api-key"] == "sk-ant-test"

The server binds port 0 itself and reports the port on its ``ready`` line, so there is no race
for a free port. Its stdout/stderr go to temporary files (`output()` shows them on failure).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from simulators.command import command

REPO_ROOT = Path(__file__).resolve().parent.parent
API_ROOT_SUFFIX = {"openai": "/v1", "anthropic": "", "google": ""}


class SimulatorProcess:
    def __init__(
        self,
        kind: str,
        *,
        api_key: str | None = None,
        validate: bool = True,
        chunk_delay_ms: float = 0.0,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if kind not in API_ROOT_SUFFIX:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.api_key = api_key
        self.host = host
        self.port = 0
        self._args = command(
            kind, host=host, api_key=api_key, validate=validate, chunk_delay_ms=chunk_delay_ms
        )
        self._env = {**os.environ, **(env or {})}
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._client: httpx.Client | None = None

    # ---------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        """The server root (where `/_sim/` lives)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The provider's API root as its docs give it (what a gateway's `base_url` holds)."""
        return self.url + API_ROOT_SUFFIX[self.kind]

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> SimulatorProcess:
        # Files, not pipes: nobody drains the server's output, and a full pipe would block it.
        self._stdout = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            self._args, cwd=REPO_ROOT, env=self._env, stdout=self._stdout, stderr=self._stderr
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            for line in self._read(self._stdout).splitlines():
                if line.startswith(f"ready {self.kind} "):
                    self.port = int(line.rsplit(":", 1)[1])
                    self._client = httpx.Client(base_url=self.url, timeout=10)
                    return self
            if self._process.poll() is not None:
                break
            time.sleep(0.02)
        output = self.output()
        self.stop()
        raise RuntimeError(f"simulator {self.kind} did not start:\n{output}")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        for stream in (self._stdout, self._stderr):
            if stream is not None:
                stream.close()
        self._stdout = self._stderr = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("simulator not started")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def output(self) -> str:
        """stdout and stderr so far, for failure messages."""
        return f"--- stdout\n{self._read(self._stdout)}\n--- stderr\n{self._read(self._stderr)}"

    @staticmethod
    def _read(stream: IO[bytes] | None) -> str:
        """Everything written so far, read with pread: the child writes through the same
        open file, so moving its offset (seek) would make its next write overwrite the start."""
        if stream is None:
            return ""
        fd, chunks, offset = stream.fileno(), [], 0
        while chunk := os.pread(fd, 1 << 16, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- control API
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("simulator not started")
        return self._client

    def script(self, steps: list[dict[str, Any]]) -> int:
        """Queue steps for the next API requests, one each; returns how many are pending."""
        response = self.client.post("/_sim/script", json=steps)
        if response.status_code != 200:
            raise ValueError(response.json().get("error", response.text))
        return int(response.json()["pending"])

    def requests(self) -> list[dict[str, Any]]:
        """API requests received so far: {"method","path","query","headers","body"}."""
        response = self.client.get("/_sim/requests")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def clear(self) -> None:
        """Forget received requests and pending steps."""
        self.client.delete("/_sim/requests").raise_for_status()
