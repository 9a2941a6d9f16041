"""Local servers that speak OpenAI's, Anthropic's and Gemini's real wire formats.

Used by the end-to-end tests, `make up` and the benchmark. Entry points:

* ``python -m simulators --kind openai|anthropic|google --port N`` (prints ``ready <kind> <url>``);
* `app` for in-process use (serve it with `uvicorn_config` so scripted resets work),
  `simulators.testing.SimulatorProcess` for tests;
* `expected_usage` / `count_tokens` / `prompt_tokens`: the deterministic token formulas
  (documented in `simulators.content`), so tests can compute what a simulator reports.
"""

from simulators.content import count_tokens, prompt_tokens
from simulators.server import PROVIDERS, app
from simulators.transport import uvicorn_config
from simulators.usage import expected_usage

KINDS = tuple(PROVIDERS)

__all__ = ["KINDS", "app", "count_tokens", "expected_usage", "prompt_tokens", "uvicorn_config"]
