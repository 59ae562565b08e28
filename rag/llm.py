"""The LLM client: OpenAI-compatible chat streaming (vLLM, llama.cpp's server, Ollama) and prompt token counting."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import httpx2
import openai
from openai import AsyncOpenAI

# A chat message as the OpenAI API takes it: {"role": ..., "content": ...}.
ChatMessage = dict[str, str]


class LLMError(Exception):
    """The model server could not be reached, refused the request, or stopped answering."""


class LLMTimeout(LLMError):
    """The model server did not answer within the configured time."""


@dataclass(frozen=True, slots=True)
class LLMConfig:
    base_url: str  # .../v1
    model: str
    api_key: str = "not-needed"
    timeout_s: float = 60.0  # longest wait for the first token and between tokens
    connect_timeout_s: float = 5.0
    max_tokens: int = 512
    context_window: int = 8192
    # The prompt budget counts a text of at most this many UTF-8 bytes (and at most a 32nd of the context window)
    # as bytes + 1 tokens, without asking the server (see TokenCounter.budget_counts); 0 asks for every text.
    bound_short_texts_bytes: int = 256


@dataclass(frozen=True, slots=True)
class StreamUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


def server_root(base_url: str) -> str:
    """The server root: OpenAI-compatible servers mount their API under /v1, their extras at the root."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (3 characters a token) for when no tokenizer answers: over-counting only
    drops a passage too many, under-counting would overflow the context window."""
    return math.ceil(len(text) / 3) + 1


class TokenCounter:
    """Counts tokens with the model server's own tokenizer: vLLM's /tokenize or llama.cpp's /extras/tokenize/count.

    Counts are cached by text hash because the same passages come back for many questions; when neither endpoint
    exists (Ollama, hosted APIs) the count falls back to a high estimate.
    """

    def __init__(self, config: LLMConfig, cache_size: int = 8192) -> None:
        self._config = config
        # aiohttp, as the model's requests: httpx spent about a millisecond of the event loop on each count (h11's
        # parser and anyio in Python), and a new question's text is counted on its way to the first token.
        self._session: aiohttp.ClientSession | None = None
        self._root = server_root(config.base_url)
        self._kind: Literal["unknown", "vllm", "llamacpp", "estimate"] = "unknown"
        self._probe_lock = asyncio.Lock()
        self._cache: OrderedDict[bytes, int] = OrderedDict()
        self._cache_size = cache_size

    @property
    def kind(self) -> str:
        return self._kind

    async def count(self, text: str) -> int:
        return (await self.count_many([text]))[0]

    async def budget_counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts for a prompt budget: `count_many`, except that a short text (at most
        `bound_short_texts_bytes` UTF-8 bytes, and at most a 32nd of the context window) is counted as its byte
        length + 1 without a round trip to the server.

        That bound is never below the real count: byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2) and SentencePiece
        with byte fallback (Llama 2, Mistral) spend at least one byte of text on every token, and SentencePiece's
        added word-start marker is the + 1. It over-counts a text by at most a 32nd of the window; what it saves is
        a new question's one round trip to the tokenizer on its way to the first token (its question is the only
        text of the prompt not yet counted)."""
        limit = min(self._config.bound_short_texts_bytes, self._config.context_window // 32)
        sizes = [len(text.encode("utf-8")) for text in texts]
        counted = iter(await self.count_many([text for text, size in zip(texts, sizes, strict=True) if size > limit]))
        return [size + 1 if size <= limit else next(counted) for size in sizes]

    async def count_many(self, texts: Sequence[str]) -> list[int]:
        keys = [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts]
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in self._cache}
        if missing:
            counts = await asyncio.gather(*(self._count_uncached(text) for text in missing.values()))
            for key, n in zip(missing, counts, strict=True):
                self._remember(key, n)
        return [self._cache[key] if key in self._cache else estimate_tokens(text) for key, text in zip(keys, texts, strict=True)]

    def _remember(self, key: bytes, n: int) -> None:
        self._cache[key] = n
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _count_uncached(self, text: str) -> int:
        if self._kind == "unknown":
            async with self._probe_lock:
                if self._kind == "unknown":
                    await self._probe(text)
        try:
            if self._kind == "vllm":
                return await self._count_vllm(text)
            if self._kind == "llamacpp":
                return await self._count_llamacpp(text)
        except (aiohttp.ClientError, TimeoutError, LLMError, KeyError, ValueError):
            pass  # the server went away between probe and count: estimate this one
        return estimate_tokens(text)

    async def _probe(self, sample: str) -> None:
        for kind, counter in (("vllm", self._count_vllm), ("llamacpp", self._count_llamacpp)):
            try:
                await counter(sample)
            except (aiohttp.ClientError, TimeoutError, LLMError, KeyError, ValueError):
                continue
            self._kind = kind  # type: ignore[assignment]
            return
        # Only settle on estimating when the server answered (without a tokenizer); if it is down, try next time.
        try:
            async with self._http().get(f"{self._config.base_url.rstrip('/')}/models") as response:
                await response.read()
            self._kind = "estimate"
        except (aiohttp.ClientError, TimeoutError):
            pass

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.connect_timeout_s),
                connector=aiohttp.TCPConnector(limit=100),
            )
        return self._session

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._http().post(url, json=body) as response:
            if response.status != 200:
                raise LLMError(f"tokenizer answered HTTP {response.status}")
            data = json.loads(await response.read())
        if not isinstance(data, dict):
            raise ValueError("unexpected tokenizer answer")
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _count_vllm(self, text: str) -> int:
        data = await self._post(
            f"{self._root}/tokenize", {"model": self._config.model, "prompt": text, "add_special_tokens": False}
        )
        return int(data["count"])

    async def _count_llamacpp(self, text: str) -> int:
        data = await self._post(f"{self._root}/extras/tokenize/count", {"input": text})
        return int(data["count"])


class _UsageTally:
    """Reads one decoded stream event: returns its text delta and keeps the usage and finish reason."""

    __slots__ = ("completion_tokens", "finish_reason", "prompt_tokens", "_reported")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self._reported = False  # the server sent a usage block: trust it over our own count

    def read(self, data: bytes) -> str | None:
        if data == b"[DONE]":
            return None
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise LLMError("the language model server sent an unreadable event") from exc
        if not isinstance(event, dict):
            return None
        if event.get("error"):
            # vLLM and llama.cpp report a failure that happens mid-answer as an error event.
            raise LLMError("the language model failed while answering")
        found = event.get("usage")
        if isinstance(found, dict):
            self._reported = True
            self.prompt_tokens = int(found.get("prompt_tokens") or self.prompt_tokens)
            self.completion_tokens = int(found.get("completion_tokens") or self.completion_tokens)
        choices = event.get("choices")
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text and not self._reported:
            self.completion_tokens += 1
        return text or None


async def _sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data` of each server-sent event in a byte stream (multi-line data joined with newlines)."""
    buffer = b""
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if data:
                    yield b"\n".join(data)
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # comments (":") and other fields (event, id, retry) carry nothing we use
    if buffer.startswith(b"data:"):
        value = buffer[5:]
        data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        yield b"\n".join(data)


def _connection_failed(error: BaseException) -> bool:
    """Whether a failure reported as a timeout was a refused or dropped connection underneath.

    The SDK's aiohttp transport maps every `aiohttp.ClientConnectionError` (a refused connection, a server that
    went away) to httpx2's ConnectTimeout; the person should read "cannot be reached" for those, not "slow"."""
    seen: BaseException | None = error
    for _ in range(16):  # a chain is a few links long; never follow a cycle
        if seen is None:
            break
        if isinstance(seen, aiohttp.ServerTimeoutError | TimeoutError):
            return False
        if isinstance(seen, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class LLMClient:
    """One per portal process: a pooled AsyncOpenAI client and the token counter of the same server."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        # The SDK's aiohttp transport (`openai[aiohttp]`): its HTTP parser and stream reader are in C. With the SDK's
        # default transport (httpx2 over httpcore2 and anyio: h11 parsing and a timeout scope per read) reading
        # 4,000 tokens a second across 200 answers took all of the event loop; see docs/chat.md for the figures.
        openai_timeout = httpx2.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._openai = AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key,
            timeout=openai_timeout,
            max_retries=0,  # a retry would double the wait the person sees; they have a retry button instead
            http_client=openai.DefaultAioHttpClient(
                timeout=openai_timeout, limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
            ),
        )
        self.tokens = TokenCounter(config)

    @property
    def model(self) -> str:
        return self.config.model

    async def stream_chat(
        self, messages: Sequence[ChatMessage], max_tokens: int | None = None, temperature: float = 0.1
    ) -> AsyncGenerator[str | StreamUsage, None]:
        """Yield text deltas as they arrive, then one StreamUsage. Raises LLMTimeout or LLMError.

        The SDK builds, authenticates and sends the request and maps HTTP errors; the event stream itself is read
        as raw server-sent events and decoded with `json.loads`. Building the SDK's typed chunk objects costs about
        100 microseconds a token, which at a few thousand tokens a second across hundreds of answers was most of
        a portal process's CPU (measured with py-spy under bench/bench_chat_overhead.py).
        """
        usage = _UsageTally()
        try:
            request = self._openai.chat.completions.with_streaming_response.create(
                model=self.config.model,
                # The messages go in `extra_body`, whose values the SDK sends as given and lets take precedence over
                # the method's (its documented contract). Passed as `messages`, each one is first walked against the
                # SDK's TypedDict unions: 0.28 ms of event-loop CPU for a two-message prompt against 0.09 ms with
                # none (measured here), spent on every question's way to its first token.
                messages=[],
                extra_body={"messages": list(messages)},
                max_tokens=max_tokens or self.config.max_tokens,
                temperature=temperature,
                stream=True,
            )
            async with request as response:
                async for data in _sse_data(response.iter_bytes()):
                    delta = usage.read(data)
                    if delta:
                        yield delta
        except (openai.APITimeoutError, httpx2.TimeoutException) as exc:
            if _connection_failed(exc):
                raise LLMError("the language model server cannot be reached") from exc
            raise LLMTimeout("the language model did not answer in time") from exc
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            raise LLMError("the language model server cannot be reached") from exc
        except openai.APIStatusError as exc:
            raise LLMError(f"the language model server answered HTTP {exc.status_code}") from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"the language model failed ({type(exc).__name__})") from exc
        yield StreamUsage(usage.prompt_tokens, usage.completion_tokens, usage.finish_reason)

    async def close(self) -> None:
        await self._openai.close()
        await self.tokens.close()
