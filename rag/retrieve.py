"""Find the passages an asker may read: dense, sparse or fused hybrid search, optionally reranked."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from rag.embed import Embedder, Reranker, Vectors
from rag.fusion import FusionConfig, fuse
from rag.sparse import Bm25Encoder
from rag.store import StoreSearchResults, VectorStore, require_access
from rag.types import AccessFilter, SearchHit, SearchMode

_MODES = ("hybrid", "dense", "sparse")


class Retriever:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        reranker: Reranker | None = None,
        *,
        sparse_encoder: Bm25Encoder | None = None,
        fusion: FusionConfig | None = None,
        candidates: int = 100,
        rerank_candidates: int = 30,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.reranker = reranker
        self.sparse_encoder = sparse_encoder or Bm25Encoder()
        self.fusion = fusion or FusionConfig()
        # Each list contributes this many candidates to fusion; more helps recall, costs little.
        self.candidates = candidates
        self.rerank_candidates = rerank_candidates

    async def search_all_modes(
        self, query: str, access: AccessFilter, limit: int | None = None, query_vector: Vectors | None = None
    ) -> dict[str, list[SearchHit]]:
        """Dense, sparse and hybrid rankings from one store round trip (evaluation uses this).

        `query_vector`: the query's embedding when the caller already has it (computed ahead of time)."""
        results = await self._both_lists(query, require_access(access), limit or self.candidates, query_vector)
        return {
            "dense": results.dense,
            "sparse": results.sparse,
            "hybrid": fuse(results.dense, results.sparse, self.fusion, query),
        }

    async def _query_vector(self, query: str, given: Vectors | None) -> Vectors:
        """The query's embedding: `given` when the caller computed it ahead of time."""
        return given if given is not None else await self.embedder.aembed_query(query)

    async def _both_lists(
        self, query: str, access: AccessFilter, limit: int, query_vector: Vectors | None
    ) -> StoreSearchResults:
        dense_vector = await self._query_vector(query, query_vector)
        sparse_vector = self.sparse_encoder.encode_query(query)
        return await self.store.search(access, limit, dense=dense_vector, sparse=sparse_vector)

    async def search(
        self, query: str, access: AccessFilter, top_k: int = 10, mode: SearchMode = "hybrid",
        query_vector: Vectors | None = None,
    ) -> list[SearchHit]:
        access = require_access(access)
        if mode not in _MODES:
            raise ValueError(f"unknown search mode {mode!r}; expected one of {', '.join(_MODES)}")
        if top_k <= 0 or not access.collection_ids or not query.strip():
            return []
        # Fusion and reranking need a deep candidate list; a single mode without a reranker does not.
        limit = max(self.candidates, top_k) if mode == "hybrid" or self.reranker is not None else top_k
        if mode == "dense":
            vector = await self._query_vector(query, query_vector)
            hits = (await self.store.search(access, limit, dense=vector)).dense
        elif mode == "sparse":
            sparse = self.sparse_encoder.encode_query(query)
            hits = (await self.store.search(access, limit, sparse=sparse)).sparse
        else:
            keep = top_k if self.reranker is None else max(self.rerank_candidates, top_k)
            dense_vector = await self._query_vector(query, query_vector)
            # The store ranks the candidates with this fusion and reads whole hits only for those kept.
            hits = await self.store.search_ranked(
                access, limit, dense_vector, self.sparse_encoder.encode_query(query),
                lambda dense, sparse: fuse(dense, sparse, self.fusion, query, limit=keep),
            )
        if self.reranker is not None:
            hits = await self.rerank(query, hits, top_k)
        return hits[:top_k]

    async def rerank(self, query: str, hits: list[SearchHit], top_k: int) -> list[SearchHit]:
        if self.reranker is None or not hits:
            return hits
        head = hits[: max(self.rerank_candidates, top_k)]
        scores = await self.reranker.ascore(query, [hit.text for hit in head])
        rescored = [replace(hit, score=score) for hit, score in zip(head, scores, strict=True)]
        rescored.sort(key=lambda hit: -hit.score)
        return rescored + hits[len(head) :]


async def gather_searches(
    retriever: Retriever, queries: list[tuple[str, AccessFilter]], concurrency: int = 4
) -> list[dict[str, list[SearchHit]]]:
    """Run many all-mode searches with bounded concurrency (evaluation and benchmarks)."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(query: str, access: AccessFilter) -> dict[str, list[SearchHit]]:
        async with semaphore:
            return await retriever.search_all_modes(query, access)

    return list(await asyncio.gather(*(one(q, a) for q, a in queries)))
