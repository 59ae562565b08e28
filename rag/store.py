"""The vector-store interface and what both Qdrant backends share: ids, payloads, access checks.

Backends: ``store_edge.EdgeVectorStore`` (Qdrant's in-process engine, the embedded default) and
``store_qdrant.QdrantServerStore`` (a Qdrant server through qdrant-client's async client).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from rag.errors import AccessFilterRequired
from rag.types import AccessFilter, Chunk, SearchHit, SparseVector

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
# Payload fields used in filters; each gets a payload index.
KEYWORD_FIELDS = ("collection_id", "document_id")
INTEGER_FIELDS = ("document_version",)

# Fixed namespace so a chunk maps to the same point id in every process and on every backend.
_POINT_NAMESPACE = uuid.UUID("6f1d2c3a-54b7-4e0e-9a51-2f0d7c9a8e11")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    # None: the embedded Qdrant Edge shard at ``path``; otherwise a Qdrant server URL.
    url: str | None = None
    api_key: str | None = None
    path: str = "var/vectors"
    collection_name: str = "enclave_chunks"
    dim: int = 384
    # "qdrant-local" runs the server code path on qdrant-client's local mode (tests, small
    # sites without a server); ":memory:" when path is empty.
    backend: Literal["auto", "edge", "qdrant", "qdrant-local"] = "auto"
    timeout_s: float = 10.0
    # Edge: once this many points were written since the last optimisation, build the index.
    optimize_after_points: int = 20_000
    # Exact (brute-force) dense search instead of HNSW: evaluation uses it so runs are repeatable.
    exact_search: bool = False


@dataclass(frozen=True, slots=True)
class StoreSearchResults:
    dense: list[SearchHit]
    sparse: list[SearchHit]


# Orders the dense and sparse candidate lists into the hits to keep (fusion, for a hybrid search).
Ranking = Callable[[list[SearchHit], list[SearchHit]], list[SearchHit]]


class VectorStore(Protocol):
    async def ensure_ready(self) -> None: ...
    async def ping(self) -> None: ...
    async def upsert(
        self, chunks: Sequence[Chunk], dense: npt.NDArray[np.float32], sparse: Sequence[SparseVector]
    ) -> None: ...
    async def search(
        self,
        access: AccessFilter,
        limit: int,
        dense: npt.NDArray[np.float32] | None = None,
        sparse: SparseVector | None = None,
    ) -> StoreSearchResults: ...
    async def search_ranked(
        self,
        access: AccessFilter,
        limit: int,
        dense: npt.NDArray[np.float32],
        sparse: SparseVector,
        rank: Ranking,
    ) -> list[SearchHit]:
        """`rank(dense_hits, sparse_hits)` of the `limit` best candidates of each kind, as full hits. `rank` sees
        each candidate's `chunk_id` (a key unique to it) and `score`, and the best sparse candidate whole; a
        backend may leave the other candidates' payload fields empty and read them only for the hits kept."""
        ...
    async def delete_document(self, document_id: str, keep_version: int | None = None) -> None: ...
    async def delete_document_version(self, document_id: str, document_version: int) -> None: ...
    async def delete_chunks(self, chunks: Sequence[Chunk]) -> None: ...
    async def delete_collection(self, collection_id: str) -> None: ...
    async def count(
        self,
        collection_id: str | None = None,
        document_id: str | None = None,
        document_version: int | None = None,
    ) -> int: ...
    async def chunk_ids(self, document_id: str, document_version: int | None = None) -> set[str]: ...
    async def optimize(self) -> None: ...
    async def close(self) -> None: ...


def point_id(chunk_id: str, document_version: int) -> str:
    # The version is part of the point id so that a new version never overwrites the points
    # that concurrent searchers of the old version still read (atomic replace).
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{chunk_id}@{document_version}"))


def chunk_payload(chunk: Chunk) -> dict[str, Any]:
    return {
        "chunk_id": chunk.chunk_id,
        "document_id": chunk.document_id,
        "collection_id": chunk.collection_id,
        "document_version": chunk.document_version,
        "ordinal": chunk.ordinal,
        "text": chunk.text,
        "title": chunk.title,
        "section": chunk.section,
        "page": chunk.page,
        "token_count": chunk.token_count,
        "content_hash": chunk.content_hash,
    }


def hit_from_payload(payload: dict[str, Any], score: float) -> SearchHit:
    return SearchHit(
        chunk_id=str(payload["chunk_id"]),
        document_id=str(payload["document_id"]),
        collection_id=str(payload["collection_id"]),
        document_version=int(payload["document_version"]),
        ordinal=int(payload["ordinal"]),
        score=float(score),
        text=str(payload.get("text", "")),
        title=str(payload.get("title", "")),
        section=str(payload.get("section", "")),
        page=payload.get("page"),
    )


def require_access(access: object) -> AccessFilter:
    """Every search names what it may see; anything else is a programming error."""
    if not isinstance(access, AccessFilter):
        raise AccessFilterRequired(
            "a search needs an AccessFilter naming the collections the asker may read"
        )
    return access


def check_upsert_shapes(
    chunks: Sequence[Chunk], dense: npt.NDArray[np.float32], sparse: Sequence[SparseVector], dim: int
) -> None:
    if len(chunks) != len(dense) or len(chunks) != len(sparse):
        raise ValueError(
            f"upsert needs one dense and one sparse vector per chunk "
            f"(chunks={len(chunks)}, dense={len(dense)}, sparse={len(sparse)})"
        )
    if len(chunks) and (dense.ndim != 2 or dense.shape[1] != dim):
        raise ValueError(f"dense vectors must have dimension {dim}, got shape {dense.shape}")


def open_store(config: StoreConfig) -> VectorStore:
    """Build the configured backend; call ``await store.ensure_ready()`` before use."""
    backend = config.backend
    if backend == "auto":
        backend = "edge" if config.url is None else "qdrant"
    if backend == "edge":
        from rag.store_edge import EdgeVectorStore

        return EdgeVectorStore(config)
    from rag.store_qdrant import QdrantServerStore

    return QdrantServerStore(config, local=backend == "qdrant-local")
