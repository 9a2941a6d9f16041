"""Where the vendored conformance material lives: inside this package, so an install carries it.

See ``data/PROVENANCE.md`` for where each file came from.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
FIXTURES_DIR = DATA_DIR / "fixtures"  # recorded provider payloads (the simulators replay them too)
OPENAI_SPEC = DATA_DIR / "openai-openapi.yaml"


def anthropic_request_schema(beta: bool) -> Path:
    name = "anthropic-messages-request-beta" if beta else "anthropic-messages-request"
    return DATA_DIR / f"{name}.schema.json"
