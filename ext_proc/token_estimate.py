"""The gateway's one token estimator: for the tpm reservation and for charging what was served.

No tokenizer is available offline for every provider (tiktoken and the like download
their vocabularies at run time, and Claude's and Gemini's are not published), so text
counts ``ceil(characters / 4)`` tokens -- OpenAI's documented rule of thumb for English,
rounded up so that an estimate errs towards charging. Characters are Unicode code
points of the text as the client sees it (message content, refusals, tool names and
arguments), not JSON framing.

Which text of a request and of its answer counts is the endpoint's (``prompt_tokens``,
``output_allowance`` and ``served_chars`` in ext_proc/endpoints/). The estimates are
used by :mod:`ext_proc.limits` (a request's reservation: its input plus its output
allowance) and by :mod:`ext_proc.settlement` (a request whose provider usage is missing,
invalid or incomplete: its input from the request, its output from what was served).
"""

from __future__ import annotations

CHARS_PER_TOKEN = 4


def tokens_for_chars(chars: int) -> int:
    """``ceil(chars / 4)``: the estimate of a text of ``chars`` characters."""
    return -(-chars // CHARS_PER_TOKEN) if chars > 0 else 0
