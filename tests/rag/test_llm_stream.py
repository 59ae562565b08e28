"""The LLM client's own reading of an OpenAI-compatible event stream (no model needed: byte-level behaviour)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from rag.llm import LLMClient, LLMConfig, LLMError, LLMTimeout, _sse_data, _UsageTally


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


async def _serve_once(reply: bytes, *, then_hang: bool = False) -> tuple[asyncio.Server, int]:
    """A one-shot HTTP server on loopback: reads a request, writes `reply`, then closes (or keeps silent)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if then_hang:
            await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _stream_from(port: int, timeout_s: float = 5.0) -> tuple[list[str], BaseException | None]:
    client = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=timeout_s,
                                 connect_timeout_s=1.0))
    got: list[str] = []
    try:
        async for piece in client.stream_chat([{"role": "user", "content": "hello"}]):
            if isinstance(piece, str):
                got.append(piece)
    except LLMError as exc:
        return got, exc
    finally:
        await client.close()
    return got, None


async def test_a_server_that_drops_the_stream_midway_is_unreachable_not_slow() -> None:
    """What arrived before the cut is kept; the error says the server went away, not that the model is slow."""
    server, port = await _serve_once(_STREAM_HEAD + _chunk(_event("Wash")))
    async with server:
        got, error = await _stream_from(port)
    assert got == ["Wash"]
    assert type(error) is LLMError and "cannot be reached" in str(error)


async def test_a_refused_connection_is_unreachable_and_a_silent_server_is_slow() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refused_port = unused.getsockname()[1]
    got, error = await _stream_from(refused_port)
    assert got == [] and type(error) is LLMError and "cannot be reached" in str(error)

    server, port = await _serve_once(_STREAM_HEAD + _chunk(_event("Wash")), then_hang=True)
    async with server:
        got, error = await _stream_from(port, timeout_s=0.5)
    assert got == ["Wash"] and isinstance(error, LLMTimeout)


async def test_the_request_carries_the_messages_model_and_limits_as_given() -> None:
    """The messages reach the server exactly as built (they travel in the SDK's extra body), once, beside the
    model, the answer limit and the streaming flag; the Authorization header carries the configured key."""
    received: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:"))
        received["head"] = head
        received["body"] = json.loads(await reader.readexactly(length))
        writer.write(_STREAM_HEAD + _chunk(_event("Wash")) + _chunk(_event(finish="stop")) + _chunk(b"data: [DONE]\n\n")
                     + b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    messages = [{"role": "system", "content": "Answer from the sources only. <b>&amp;</b>"},
                {"role": "user", "content": "How long should staff wash hands? ünïcode ✓"},
                {"role": "assistant", "content": "Twenty seconds [1]."},
                {"role": "user", "content": "And before surgery?"}]
    client = LLMClient(LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="clinic-model", api_key="k-123",
                                 max_tokens=77))
    async with server:
        try:
            got = [piece async for piece in client.stream_chat(messages, temperature=0.2)]
        finally:
            await client.close()
    assert got[0] == "Wash"
    assert received["body"] == {"model": "clinic-model", "messages": messages, "max_tokens": 77, "temperature": 0.2,
                                "stream": True}
    assert "POST /v1/chat/completions " in str(received["head"])
    assert "authorization: bearer k-123" in str(received["head"]).lower()
