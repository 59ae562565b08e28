"""A lean HTTP/1.1 client for the load side of the chat benchmarks (a measuring instrument, used by nothing else).

The benchmarks run the portal and the load on the same 2-core machine, so every millisecond the load generator
spends in Python is taken from the portal being measured. httpx costs about 2.5 ms of client time per request and
much more while reading 200 event streams at once; this client sends a request and reads the reply with
asyncio streams and little else (keep-alive connections, fixed content length or chunked replies), which is
all the benchmark's GET, POST and event-stream reading need. Signing in still goes through httpx (cookies,
redirects); the signed-in cookie and CSRF header are then copied here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def head(self) -> tuple[int, dict[str, str]]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The reply body as it arrives: chunked transfer decoded, or a fixed length."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";", 1)[0], 16)
                if size == 0:
                    await self.reader.readline()
                    return
                data = await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                yield data
        else:
            length = int(headers.get("content-length", "0"))
            if length:
                yield await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class LeanClient:
    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    _idle: list[_Connection] = field(default_factory=list)

    async def _connect(self) -> _Connection:
        if self._idle:
            return self._idle.pop()
        parts = urlsplit(self.base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        return _Connection(reader, writer)

    def _request_bytes(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        host = urlsplit(self.base_url).netloc
        lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **headers}.items()]
        if body or method == "POST":
            lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> AsyncIterator[tuple[int, dict[str, str], AsyncIterator[bytes]]]:
        """Send one request; yield (status, headers, body chunks). A reply read to its end returns the connection
        to the pool; one left early (the reader stopped at the first token) is closed, as a browser would."""
        connection = await self._connect()
        finished = False
        try:
            connection.writer.write(self._request_bytes(method, path, headers or {}, body))
            status, reply_headers = await connection.head()
            done = asyncio.Event()

            async def body_chunks() -> AsyncIterator[bytes]:
                async for chunk in connection.chunks(reply_headers):
                    yield chunk
                done.set()

            yield status, reply_headers, body_chunks()
            finished = done.is_set() and reply_headers.get("connection", "").lower() != "close"
        finally:
            if finished:
                self._idle.append(connection)
            else:
                connection.close()

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Reply:
        async with self.stream(method, path, headers, body) as (status, reply_headers, chunks):
            data = b"".join([chunk async for chunk in chunks])
        return Reply(status, reply_headers, data)

    async def post_form(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
        return await self.request("POST", path, {"content-type": "application/x-www-form-urlencoded", **(headers or {})},
                                  urlencode(form).encode())

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()
