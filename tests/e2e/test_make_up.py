"""The README's first command: `make up` on a fresh clone serves the OpenAI SDK with the printed demo key."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import openai

from infery.stack import REPO, free_port, port_open
from tests import audio_samples
from tests.locked_wheels import offline


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> tuple[re.Match[str], str]:
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        found = re.search(pattern, "".join(seen))
        if found:
            return found, "".join(seen)
    raise AssertionError(f"no {pattern!r} in make up's output:\n{''.join(seen)[-5000:]}")


def test_make_up_on_a_fresh_clone(tmp_path: Path, locked_wheels: Path):
    clone = tmp_path / "infery"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    ports = {
        "INFERY_LISTEN_PORT": free_port(),
        "INFERY_ADMIN_PORT": free_port(),
        "INFERY_XDS_PORT": free_port(),
        "INFERY_EXT_PROC_PORT": free_port(),
        "INFERY_ENVOY_ADMIN_PORT": free_port(),
        "INFERY_METRICS_PORT": free_port(),
        "INFERY_ENVOY_STATS_PORT": free_port(),
        "INFERY_FILES_PORT": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERY_", "VIRTUAL_ENV"))}
    env |= {k: str(v) for k, v in ports.items()}
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if ".venv" not in p)
    # `make up` runs unchanged; its pip reads the lock's files, hash-checked, from the run's shared
    # folder rather than from PyPI (tests/locked_wheels.py says why and what stays proven).
    env |= offline(locked_wheels)
    proc = subprocess.Popen(
        ["make", "up"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        found, output = _read_until(proc, r"demo key\s+: (inf_\S+)", timeout=420)
        key = found.group(1)
        # The admin token is never printed (output ends up in logs): the banner says where its file is.
        token_file = Path(re.search(r"admin token\s+: in (\S+) \(mode 600\)", output).group(1))  # type: ignore[union-attr]
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        admin_token = token_file.read_text().strip()
        assert admin_token and admin_token not in output
        admin_url = re.search(r"admin API \+ docs\s+: (\S+)/docs", output).group(1)  # type: ignore[union-attr]
        providers = httpx.get(
            f"{admin_url}/admin/v1/providers", headers={"authorization": f"Bearer {admin_token}"}
        )
        assert providers.status_code == 200
        base_url = re.search(r"OpenAI-compatible API : (\S+)", output).group(1)  # type: ignore[union-attr]
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}]
        )
        assert reply.choices[0].message.content
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}], stream=True
        )
        assert list(stream)[-1].model_extra["credits_used"] >= 0
        # Every endpoint the README documents is served by the demo configuration.
        vectors = client.embeddings.create(model="text-embedding-3-small", input="Hello!")
        assert len(vectors.data[0].embedding) > 0
        image = client.images.generate(model="gpt-image-1", prompt="a lighthouse at dusk")
        assert image.data and image.data[0].b64_json
        image = client.images.generate(model="dall-e-3", prompt="a lighthouse at dusk")
        assert image.data and image.data[0].url
        uploaded = client.files.create(file=("notes.txt", b"kept by the gateway"), purpose="user_data")
        assert client.files.content(uploaded.id).read() == b"kept by the gateway"
        assert (clone / ".infery" / "files").is_dir()  # the default storage, under .infery/
        speech = client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hello!", response_format="wav"
        )
        assert speech.content.startswith(b"RIFF") and float(speech.response.headers["x-credits-used"]) > 0
        heard = client.audio.transcriptions.create(
            model="whisper-1", file=("hello.wav", audio_samples.wav(1.0))
        )
        assert heard.text and heard.usage is not None
        heard = client.audio.transcriptions.create(
            model="gemini-2-5-flash", file=("hello.wav", speech.content)
        )
        assert heard.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # Ctrl-C stopped every process it started.
    for port in ports.values():
        assert not port_open(port), f"port {port} still open after Ctrl-C"
    left = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left behind: {left}"
