"""The production vector store: a Qdrant server (or cluster) through qdrant-client's async client.

The same class runs on qdrant-client's local mode (``backend="qdrant-local"``), which is how the
shared store test suite exercises this code path without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.errors import StoreError
from rag.store import (
    DENSE_VECTOR,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    SPARSE_VECTOR,
    Ranking,
    StoreConfig,
    StoreSearchResults,
    check_upsert_shapes,
    chunk_payload,
    hit_from_payload,
    point_id,
    require_access,
)
from rag.types import AccessFilter, Chunk, SearchHit, SparseVector

_UPSERT_BATCH = 256
_SCROLL_PAGE = 1_000


def _match_filter(must: dict[str, Any] | None = None, must_not: dict[str, Any] | None = None) -> Any:
    from qdrant_client import models

    def conditions(fields: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for key, value in fields.items():
            if isinstance(value, (list, tuple, set, frozenset)):
                out.append(models.FieldCondition(key=key, match=models.MatchAny(any=sorted(value))))
            else:
                out.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
        return out

    return models.Filter(must=conditions(must or {}) or None, must_not=conditions(must_not or {}) or None)


class QdrantServerStore:
    def __init__(self, config: StoreConfig, local: bool = False) -> None:
        from qdrant_client import AsyncQdrantClient

        self._config = config
        self._name = config.collection_name
        if local:
            location = config.path or ":memory:"
            if location == ":memory:":
                self._client = AsyncQdrantClient(location=":memory:")
            else:
                self._client = AsyncQdrantClient(path=location)
        else:
            self._client = AsyncQdrantClient(
                url=config.url, api_key=config.api_key, timeout=int(config.timeout_s)
            )
        self._local = local

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (ValueError, TypeError):
            raise
        except Exception as exc:
            raise StoreError(f"vector store operation failed: {exc}") from exc

    async def ensure_ready(self) -> None:
        from qdrant_client import models

        if not await self._call(self._client.collection_exists(self._name)):
            await self._call(
                self._client.create_collection(
                    self._name,
                    vectors_config={
                        DENSE_VECTOR: models.VectorParams(size=self._config.dim, distance=models.Distance.COSINE)
                    },
                    sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                )
            )
        if self._local:
            return  # local mode has no payload indexes (it scans), and warns if asked for them
        for name in KEYWORD_FIELDS:
            await self._call(
                self._client.create_payload_index(self._name, name, models.PayloadSchemaType.KEYWORD, wait=True)
            )
        for name in INTEGER_FIELDS:
            await self._call(
                self._client.create_payload_index(self._name, name, models.PayloadSchemaType.INTEGER, wait=True)
            )

    async def ping(self) -> None:
        await self._call(self._client.get_collection(self._name))

    async def upsert(
        self, chunks: Sequence[Chunk], dense: npt.NDArray[np.float32], sparse: Sequence[SparseVector]
    ) -> None:
        from qdrant_client import models

        check_upsert_shapes(chunks, dense, sparse, self._config.dim)
        for start in range(0, len(chunks), _UPSERT_BATCH):
            points = [
                models.PointStruct(
                    id=point_id(chunk.chunk_id, chunk.document_version),
                    vector={
                        DENSE_VECTOR: dense[i].tolist(),
                        SPARSE_VECTOR: models.SparseVector(
                            indices=list(sparse[i].indices), values=list(sparse[i].values)
                        ),
                    },
                    payload=chunk_payload(chunk),
                )
                for i, chunk in enumerate(chunks[start : start + _UPSERT_BATCH], start=start)
            ]
            await self._call(self._client.upsert(self._name, points=points, wait=True))

    async def optimize(self) -> None:
        """The server builds its indexes on its own."""

    async def search_ranked(
        self,
        access: AccessFilter,
        limit: int,
        dense: npt.NDArray[np.float32],
        sparse: SparseVector,
        rank: Ranking,
    ) -> list[SearchHit]:
        """Both candidate lists with their payloads, ranked here (one round trip to the server)."""
        results = await self.search(access, limit, dense=dense, sparse=sparse)
        return rank(results.dense, results.sparse)

    async def search(
        self,
        access: AccessFilter,
        limit: int,
        dense: npt.NDArray[np.float32] | None = None,
        sparse: SparseVector | None = None,
    ) -> StoreSearchResults:
        from qdrant_client import models

        access = require_access(access)
        if not access.collection_ids or limit <= 0:
            return StoreSearchResults([], [])
        must_not = {"document_id": access.excluded_document_ids} if access.excluded_document_ids else None
        flt = _match_filter(must={"collection_id": access.collection_ids}, must_not=must_not)
        requests: list[models.QueryRequest] = []
        if dense is not None:
            requests.append(
                models.QueryRequest(
                    query=np.asarray(dense, dtype=np.float32).tolist(),
                    using=DENSE_VECTOR,
                    filter=flt,
                    params=models.SearchParams(exact=True) if self._config.exact_search else None,
                    limit=limit,
                    with_payload=True,
                )
            )
        if sparse is not None and sparse.indices:
            requests.append(
                models.QueryRequest(
                    query=models.SparseVector(indices=list(sparse.indices), values=list(sparse.values)),
                    using=SPARSE_VECTOR,
                    filter=flt,
                    limit=limit,
                    with_payload=True,
                )
            )
        if not requests:
            return StoreSearchResults([], [])
        responses = await self._call(self._client.query_batch_points(self._name, requests=requests))
        lists = [[hit_from_payload(p.payload or {}, p.score) for p in response.points] for response in responses]
        dense_hits = lists.pop(0) if dense is not None else []
        sparse_hits = lists.pop(0) if lists else []
        return StoreSearchResults(dense_hits, sparse_hits)

    async def _delete(self, flt: Any) -> None:
        from qdrant_client import models

        await self._call(
            self._client.delete(self._name, points_selector=models.FilterSelector(filter=flt), wait=True)
        )

    async def delete_document(self, document_id: str, keep_version: int | None = None) -> None:
        must_not = {"document_version": keep_version} if keep_version is not None else None
        await self._delete(_match_filter(must={"document_id": document_id}, must_not=must_not))

    async def delete_document_version(self, document_id: str, document_version: int) -> None:
        await self._delete(_match_filter(must={"document_id": document_id, "document_version": document_version}))

    async def delete_chunks(self, chunks: Sequence[Chunk]) -> None:
        from qdrant_client import models

        if not chunks:
            return
        ids: list[Any] = [point_id(chunk.chunk_id, chunk.document_version) for chunk in chunks]
        await self._call(self._client.delete(self._name, points_selector=models.PointIdsList(points=ids), wait=True))

    async def delete_collection(self, collection_id: str) -> None:
        await self._delete(_match_filter(must={"collection_id": collection_id}))

    async def count(
        self,
        collection_id: str | None = None,
        document_id: str | None = None,
        document_version: int | None = None,
    ) -> int:
        fields: dict[str, Any] = {
            key: value
            for key, value in (
                ("collection_id", collection_id),
                ("document_id", document_id),
                ("document_version", document_version),
            )
            if value is not None
        }
        result = await self._call(
            self._client.count(self._name, count_filter=_match_filter(must=fields) if fields else None, exact=True)
        )
        return int(result.count)

    async def chunk_ids(self, document_id: str, document_version: int | None = None) -> set[str]:
        fields: dict[str, Any] = {"document_id": document_id}
        if document_version is not None:
            fields["document_version"] = document_version
        flt = _match_filter(must=fields)
        found: set[str] = set()
        offset = None
        while True:
            records, offset = await self._call(
                self._client.scroll(
                    self._name, scroll_filter=flt, limit=_SCROLL_PAGE, offset=offset, with_payload=["chunk_id"]
                )
            )
            found.update(str((record.payload or {})["chunk_id"]) for record in records)
            if offset is None:
                return found

    async def close(self) -> None:
        await self._client.close()
