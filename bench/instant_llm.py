"""A measuring instrument, never a test double: an OpenAI-compatible server that answers at once.

It streams a fixed number of tokens at a fixed interval for every chat completion, counts tokens for /tokenize
(vLLM's shape) by splitting on spaces, and records its own time to first token per question (keyed by the
`bench-<hex>` marker the benchmark puts in each question), served at GET /stats. Benchmarks subtract that from
what the portal's reader sees, leaving the portal's own overhead.

    python bench/instant_llm.py --port 8601 --tokens 40 --interval-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import uvicorn

MARKER = re.compile(rb"bench-[0-9a-f]{8,32}")


class InstantLLM:
    def __init__(self, tokens: int, interval_s: float, first_token_s: float = 0.0) -> None:
        self.tokens = tokens
        self.interval_s = interval_s
        self.first_token_s = first_token_s  # a real model's time to first token (prompt processing), when asked
        self.ttft_ms: dict[str, float] = {}
        self.active = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        started = time.perf_counter()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path.endswith("/chat/completions"):
            await self._stream(body, started, receive, send)
        elif path.endswith("/tokenize"):
            prompt = json.loads(body or b"{}").get("prompt", "")
            await self._json(send, {"count": len(prompt.split()) + 1, "max_model_len": 8192})
        elif path.endswith("/models"):
            await self._json(send, {"object": "list", "data": [{"id": "instant", "object": "model"}]})
        elif path == "/stats":
            await self._json(send, {"ttft_ms": self.ttft_ms, "active": self.active})
        else:
            await self._json(send, {"error": "not found"}, status=404)

    async def _json(self, send: Any, data: dict[str, Any], status: int = 200) -> None:
        payload = json.dumps(data).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _stream(self, body: bytes, started: float, receive: Any, send: Any) -> None:
        """Stream the answer until it is complete or the reader leaves. Like vLLM, which aborts a request whose
        client disconnected, it stops there: uvicorn would otherwise accept (and drop) the rest of the answer, and
        the instrument would spend the portal's CPU on answers nobody reads."""
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await self._stream_until(body, started, send, gone)
        finally:
            watcher.cancel()

    async def _stream_until(self, body: bytes, started: float, send: Any, gone: asyncio.Event) -> None:
        request = json.loads(body)
        marker = MARKER.search(json.dumps(request.get("messages", [])[-1:]).encode())
        count = min(self.tokens, int(request.get("max_tokens") or self.tokens))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        self.active += 1
        try:
            if self.first_token_s:
                await asyncio.sleep(self.first_token_s)
            for i in range(count):
                if gone.is_set():
                    return
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "instant",
                         "choices": [{"index": 0, "delta": {"content": f"w{i} " if i else "Answer [1] "},
                                      "finish_reason": None}]}
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                            "more_body": True})
                if i == 0 and marker:
                    self.ttft_ms[marker.group().decode()] = (time.perf_counter() - started) * 1000
                if self.interval_s:
                    await asyncio.sleep(self.interval_s)
            done = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "instant",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n",
                        "more_body": False})
        finally:
            self.active -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--first-token-ms", type=float, default=0.0, help="wait before the first token (default none)")
    args = parser.parse_args()
    app = InstantLLM(args.tokens, args.interval_ms / 1000, args.first_token_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
