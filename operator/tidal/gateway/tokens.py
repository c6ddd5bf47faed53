"""Counting generated tokens and spotting the first one in an upstream response, as it streams.

Owns: `TokenCounter`, fed the response body chunk by chunk exactly as it is passed to the
client (it never holds the stream back). Must not: do IO.

What counts, in order of trust:
1. `usage.completion_tokens` when the server reports it: the whole body of a JSON response,
   or the usage chunk of a stream (vLLM and OpenAI send one with
   `stream_options: {include_usage: true}`); the last one seen wins.
2. Otherwise, for a stream, one token per non-empty output field in each event (`content`,
   `reasoning_content`, `text`, `tool_calls`): engines send one token per chunk unless they
   batch (which this undercounts). Events without `usage` are scanned with a regular
   expression instead of parsed: the relay runs this on every chunk of every stream, and
   JSON-decoding each one was the largest share of the gateway's CPU per token. Inside JSON
   strings quotes are escaped, so text that merely mentions `"content"` never matches.
3. Otherwise 0 (embeddings generate nothing).

The first token is the first SSE event carrying output; role-only and empty deltas (vLLM's
opening chunk) are not tokens. A JSON (non-streaming) response has no first token: its first
byte is the whole answer, and counting it would turn TTFT into latency.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["TokenCounter"]

# A JSON body is kept for its `usage` only up to this size; a larger one is passed through
# uncounted rather than held in memory.
MAX_JSON_BODY: Final = 4 << 20
# One SSE line longer than this is skipped (no real chunk is near it).
MAX_SSE_LINE: Final = 1 << 20
_OUTPUT_KEYS: Final = ("content", "reasoning_content", "text", "tool_calls")
# A non-empty output string, or a non-empty tool_calls list, as a key of a JSON object.
_OUTPUT: Final = re.compile(
    rb'"(?:content|reasoning_content|text)"\s*:\s*"(?!")|"tool_calls"\s*:\s*\[\s*[^\]\s]'
)


class TokenCounter:
    """Feed it the response body; ask `tokens` at the end."""

    def __init__(self, *, streaming: bool) -> None:
        self.streaming = streaming
        self.first_token_seen = False
        self._usage: int | None = None
        self._chunks = 0
        self._buffer = b""
        self._skipping_line = False
        self._body = bytearray()
        self._body_overflow = False

    def feed(self, data: bytes) -> bool:
        """Account for `data`; True when it carried the response's first token."""
        if not self.streaming:
            if not self._body_overflow:
                if len(self._body) + len(data) > MAX_JSON_BODY:
                    self._body_overflow = True
                    self._body.clear()
                else:
                    self._body += data
            return False
        before = self.first_token_seen
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if self._skipping_line:
                self._skipping_line = False
                continue
            self._line(line)
        if len(self._buffer) > MAX_SSE_LINE:
            self._buffer = b""
            self._skipping_line = True
        return self.first_token_seen and not before

    def tokens(self) -> int:
        """Generated tokens for the whole response (call once the body is complete)."""
        if not self.streaming:
            if self._body_overflow or not self._body:
                return 0
            try:
                return _completion_tokens(json.loads(bytes(self._body))) or 0
            except ValueError:
                return 0
        if self._buffer and not self._skipping_line:
            self._line(self._buffer)
            self._buffer = b""
        return self._usage if self._usage is not None else self._chunks

    def _line(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r")
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        if b'"usage"' in payload:
            try:
                event = json.loads(payload)
            except ValueError:
                return
            usage = _completion_tokens(event)
            if usage is not None:
                self._usage = usage
            outputs = _outputs(event)
        else:
            outputs = len(_OUTPUT.findall(payload))
        if outputs:
            self._chunks += outputs
            self.first_token_seen = True


def _completion_tokens(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    value = usage.get("completion_tokens")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _outputs(event: Any) -> int:
    """How many choices of one stream event carry output."""
    if not isinstance(event, dict):
        return 0
    choices = event.get("choices")
    if not isinstance(choices, list):
        return 0
    count = 0
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        carriers = [delta, choice] if isinstance(delta, dict) else [choice]
        if any(isinstance(c, dict) and any(c.get(k) for k in _OUTPUT_KEYS) for c in carriers):
            count += 1
    return count
