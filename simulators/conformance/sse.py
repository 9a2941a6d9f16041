"""Server-sent events split into (event name, data) pairs, as every provider's stream is read."""

from __future__ import annotations

from collections.abc import Iterator


def iter_sse(text: str) -> Iterator[tuple[str | None, str]]:
    """Yield ``(event, data)`` per event; multi-line data is joined with newlines, comments dropped.

    An event with a name but no data is yielded too (Anthropic's validators want to see it).
    """
    event: str | None = None
    data: list[str] = []
    for raw in [*text.splitlines(), ""]:
        line = raw.rstrip("\r")
        if not line:
            if data or event:
                yield event, "\n".join(data)
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
