"""gateway.tokens: counting generated tokens and the first token while bytes stream by."""

from __future__ import annotations

import json
from typing import Any

from tidal.gateway.tokens import MAX_JSON_BODY, MAX_SSE_LINE, TokenCounter


def sse(*events: Any) -> bytes:
    out = b""
    for event in events:
        payload = event if isinstance(event, str) else json.dumps(event)
        out += f"data: {payload}\n\n".encode()
    return out


def chat(content: str | None = None, **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


STREAM = sse(
    chat("", role="assistant"),
    chat("Hello"),
    chat(" world"),
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    "[DONE]",
)


def test_a_stream_counts_one_token_per_chunk_with_output() -> None:
    counter = TokenCounter(streaming=True)

    firsts = [counter.feed(STREAM)]

    assert counter.tokens() == 2
    assert firsts == [True]


def test_the_first_token_is_the_first_chunk_with_output_even_split_mid_line() -> None:
    counter = TokenCounter(streaming=True)
    cut = STREAM.index(b"Hello") + 2
    opening = STREAM.index(b"\n\n") + 2

    seen = [counter.feed(STREAM[:opening]), counter.feed(STREAM[opening:cut])]
    seen.append(counter.feed(STREAM[cut:]))

    assert seen == [False, False, True]
    assert counter.tokens() == 2


def test_byte_by_byte_delivery_counts_the_same() -> None:
    counter = TokenCounter(streaming=True)
    firsts = [counter.feed(STREAM[i : i + 1]) for i in range(len(STREAM))]

    assert firsts.count(True) == 1
    assert counter.tokens() == 2


def test_reported_usage_wins_over_counting_chunks() -> None:
    counter = TokenCounter(streaming=True)
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 17}}

    counter.feed(STREAM[: -len(b"data: [DONE]\n\n")] + sse(usage, "[DONE]"))

    assert counter.tokens() == 17


def test_completions_reasoning_and_tool_calls_count_as_output() -> None:
    events = sse(
        {"choices": [{"index": 0, "text": "a"}]},
        chat(None, reasoning_content="thinking"),
        chat(None, tool_calls=[{"index": 0, "function": {"arguments": "{"}}]),
        {"choices": [{"index": 0, "text": "b"}, {"index": 1, "text": "c"}]},
    )
    counter = TokenCounter(streaming=True)
    counter.feed(events)

    assert counter.tokens() == 5


def test_garbage_comments_and_crlf_are_tolerated() -> None:
    raw = b": keep-alive\r\n\r\ndata: {not json\r\n\r\nevent: x\r\n" + sse(chat("ok")).replace(
        b"\n", b"\r\n"
    )
    counter = TokenCounter(streaming=True)

    assert counter.feed(raw) is True
    assert counter.tokens() == 1


def test_a_last_line_without_newline_is_still_counted() -> None:
    counter = TokenCounter(streaming=True)
    counter.feed(b"data: " + json.dumps(chat("x")).encode())

    assert counter.tokens() == 1


def test_an_overlong_line_is_skipped_not_buffered_forever() -> None:
    counter = TokenCounter(streaming=True)
    counter.feed(b"data: " + b"x" * (MAX_SSE_LINE + 10))
    counter.feed(b"still the long line\n" + sse(chat("after")))

    assert counter.tokens() == 1


def test_a_json_response_is_counted_from_usage_and_has_no_first_token() -> None:
    body = json.dumps(
        {"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 9}}
    )
    counter = TokenCounter(streaming=False)

    firsts = [counter.feed(body[:10].encode()), counter.feed(body[10:].encode())]

    assert firsts == [False, False]
    assert counter.tokens() == 9


def test_json_without_completion_tokens_counts_zero() -> None:
    embeddings = {"data": [{"embedding": [0.1]}], "usage": {"prompt_tokens": 4, "total_tokens": 4}}
    for body in (json.dumps(embeddings).encode(), b"not json", b""):
        counter = TokenCounter(streaming=False)
        counter.feed(body)
        assert counter.tokens() == 0


def test_a_huge_json_body_is_passed_through_uncounted() -> None:
    counter = TokenCounter(streaming=False)
    counter.feed(b'{"usage": {"completion_tokens": 3}, "pad": "' + b"x" * MAX_JSON_BODY)
    counter.feed(b'"}')

    assert counter.tokens() == 0


def test_output_that_quotes_json_keys_is_still_one_token() -> None:
    tricky = chat('he wrote {"content": "x", "text": "y", "tool_calls": [1]}')
    counter = TokenCounter(streaming=True)

    nothing = {"choices": [{"index": 0, "delta": {"content": None, "tool_calls": []}}]}
    counter.feed(sse(tricky, nothing))

    assert counter.tokens() == 1
