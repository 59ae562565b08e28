"""Errors the rag library raises, each with a message fit to show an administrator."""

from __future__ import annotations


class RagError(Exception):
    """Base class for every error raised on purpose by the rag library."""


class DocumentRejected(RagError):
    """A file cannot be indexed; ``reason`` says why in plain words."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


class AccessFilterRequired(RagError):
    """A search was attempted without an access filter: that is a bug, never 'search everything'."""


class StoreError(RagError):
    """The vector store failed or is unreachable."""


class EmbedderError(RagError):
    """The embedding backend failed or is misconfigured."""
