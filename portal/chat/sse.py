"""Server-sent events for an answer: escaped `token` events, then `sources`, then `done` (the finished bubble)."""

from __future__ import annotations

from markupsafe import escape


def sse_event(event: str, data: str) -> bytes:
    """One SSE event; every line of `data` becomes its own `data:` line (the browser joins them with newlines)."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    body = "".join(f"data: {line}\n" for line in lines)
    return f"event: {event}\n{body}\n".encode()


def token_event(text: str) -> bytes:
    # The model's text is untrusted: escaped here, it is inserted as text, never as markup.
    return sse_event("token", str(escape(text)))


KEEPALIVE = b": keep-alive\n\n"
