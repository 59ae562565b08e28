"""Prompt token counts from the model server's own tokenizer (the real llama.cpp server), and estimates without one."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from rag.llm import LLMConfig, TokenCounter, estimate_tokens
from tests.conftest import free_port

pytestmark = pytest.mark.llm

TEXTS = ["Staff must wash their hands for at least 40 seconds.", "Algebra: solve 2x + 3 = 11 for x.", "dose?"]


def _server_count(base_url: str, text: str) -> int:
    """llama.cpp's own count, asked directly (not through the counter)."""
    root = base_url.rsplit("/v1", 1)[0]
    request = urllib.request.Request(f"{root}/extras/tokenize/count", data=json.dumps({"input": text}).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the test's own local server
        return int(json.loads(response.read())["count"])


async def _point_at(counter: TokenCounter, root: str) -> None:
    """Move the counter's tokenizer requests to `root` (a server gone away, or one come up), on a fresh connection."""
    await counter.close()
    counter._root = root


async def test_counts_come_from_the_servers_tokenizer_and_are_cached(llm_server: Any) -> None:
    counter = TokenCounter(LLMConfig(base_url=llm_server.base_url, model="smollm2"))
    try:
        counts = await counter.count_many(TEXTS)
        assert counter.kind == "llamacpp"
        assert counts == [_server_count(llm_server.base_url, text) for text in TEXTS]
        assert counts != [estimate_tokens(text) for text in TEXTS], "real counts, not the estimate"
        await _point_at(counter, f"http://127.0.0.1:{free_port()}")  # gone: only the cache can answer now
        assert await counter.count_many(list(reversed(TEXTS))) == list(reversed(counts)), "answered from the cache"
    finally:
        await counter.close()


async def test_a_server_that_is_down_gets_estimates_and_is_asked_again_later(llm_server: Any) -> None:
    counter = TokenCounter(LLMConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", connect_timeout_s=2.0))
    try:
        assert await counter.count_many(TEXTS) == [estimate_tokens(text) for text in TEXTS]
        assert counter.kind == "unknown"  # not settled on estimating: the server may come up
        await _point_at(counter, llm_server.base_url.rsplit("/v1", 1)[0])  # it came up
        text = "How long must staff wash their hands before patient contact?"
        assert await counter.count(text) == _server_count(llm_server.base_url, text)
        assert counter.kind == "llamacpp"
    finally:
        await counter.close()


async def test_the_budget_bounds_short_texts_by_their_bytes_and_counts_long_ones(llm_server: Any) -> None:
    """A short text is budgeted at its UTF-8 length + 1 without a round trip, a bound never below the tokenizer's
    own count (multi-byte characters included); a longer text is counted by the server."""
    short = [*TEXTS, "Händehygiene: 40 Sekunden ✓", "手を40秒間洗う"]
    long_text = "Staff must wash their hands for at least 40 seconds before and after patient contact. " * 4
    assert all(len(text.encode()) <= 256 for text in short) and len(long_text.encode()) > 256
    counter = TokenCounter(LLMConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", connect_timeout_s=2.0))
    try:
        # Nothing listens there: short texts never need the server.
        assert await counter.budget_counts(short) == [len(text.encode()) + 1 for text in short]
        assert counter.kind == "unknown", "no tokenizer request was made"
        await _point_at(counter, llm_server.base_url.rsplit("/v1", 1)[0])
        counts = await counter.budget_counts([short[0], long_text, short[-1]])
        assert counts[1] == _server_count(llm_server.base_url, long_text) and counter.kind == "llamacpp"
        assert all(len(text.encode()) + 1 >= _server_count(llm_server.base_url, text) for text in short)
    finally:
        await counter.close()


async def test_a_small_context_window_bounds_fewer_texts(llm_server: Any) -> None:
    """The byte bound over-counts by at most a 32nd of the window: with 1,024 tokens only texts up to 32 bytes are
    bounded; a longer one is counted by the server."""
    counter = TokenCounter(LLMConfig(base_url=llm_server.base_url, model="m", context_window=1024))
    text = "How long must staff wash their hands before patient contact?"  # 61 bytes
    try:
        assert await counter.budget_counts(["dose?", text]) == [6, _server_count(llm_server.base_url, text)]
    finally:
        await counter.close()
