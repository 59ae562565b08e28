"""The LLM client's own reading of an OpenAI-compatible event stream (no model needed: byte-level behaviour)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from rag.llm import LLMError, _sse_data, _UsageTally


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _collect(*parts: bytes) -> list[bytes]:
    return [data async for data in _sse_data(_chunks(*parts))]


def _event(content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if content is None and finish is None else [{"index": 0, "delta": {"content": content} if content
                                                              else {}, "finish_reason": finish}]
    body: dict[str, object] = {"object": "chat.completion.chunk", "choices": choices}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def test_events_split_across_reads_and_crlf_lines_are_reassembled() -> None:
    stream = _event("Hel") + b": keep-alive comment\r\n\r\n" + _event("lo").replace(b"\n", b"\r\n") + b"data: [DONE]\n\n"
    # Cut the bytes at every position: the events read the same whatever the network's chunking.
    for cut in range(1, len(stream)):
        assert await _collect(stream[:cut], stream[cut:]) == [
            json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hel"},
                                                                        "finish_reason": None}]}).encode(),
            json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "lo"},
                                                                        "finish_reason": None}]}).encode(),
            b"[DONE]",
        ]


async def test_multi_line_data_is_joined_and_a_last_event_without_blank_line_is_kept() -> None:
    assert await _collect(b"data: one\ndata: two\n\nevent: x\ndata:three") == [b"one\ntwo", b"three"]


def test_tally_counts_deltas_then_trusts_the_servers_usage() -> None:
    tally = _UsageTally()
    texts = [tally.read(_event(word)[6:-2]) for word in ("a", "b", "c")]
    assert texts == ["a", "b", "c"] and tally.completion_tokens == 3
    assert tally.read(_event(finish="length")[6:-2]) is None and tally.finish_reason == "length"
    tally.read(_event(usage={"prompt_tokens": 40, "completion_tokens": 7})[6:-2])
    assert (tally.prompt_tokens, tally.completion_tokens) == (40, 7)
    assert tally.read(b"[DONE]") is None


@pytest.mark.parametrize("data", [b'{"error": {"message": "out of memory"}}', b"{not json"])
def test_an_error_event_or_garbage_is_an_llm_error(data: bytes) -> None:
    with pytest.raises(LLMError):
        _UsageTally().read(data)
