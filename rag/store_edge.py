"""The embedded default vector store: one Qdrant Edge shard (Qdrant's engine, in-process) on disk.

Qdrant Edge's API is synchronous, so every call runs in a worker thread and the event loop keeps serving
requests while a search or an index build runs. Reading payloads holds the GIL, though (measured: a thread
searching with payloads left the main thread a seventh of its progress), which is why a hybrid search reads
payloads only for the hits it keeps (`search_ranked`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

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

T = TypeVar("T")
_UPSERT_BATCH = 512
_SCROLL_PAGE = 1_000


def _qe() -> Any:
    import qdrant_edge

    return qdrant_edge


def _match_filter(
    must: dict[str, Any] | None = None, must_not: dict[str, Any] | None = None
) -> Any:
    qe = _qe()

    def conditions(fields: dict[str, Any]) -> list[Any]:
        out = []
        for key, value in fields.items():
            if isinstance(value, (list, tuple, set, frozenset)):
                out.append(qe.FieldCondition(key=key, match=qe.MatchAny(any=sorted(value))))
            else:
                out.append(qe.FieldCondition(key=key, match=qe.MatchValue(value=value)))
        return out

    return qe.Filter(
        must=conditions(must or {}) or None,
        must_not=conditions(must_not or {}) or None,
    )


def access_filter(access: AccessFilter) -> Any:
    must_not = {"document_id": access.excluded_document_ids} if access.excluded_document_ids else None
    return _match_filter(must={"collection_id": access.collection_ids}, must_not=must_not)


def _keyed_hit(key: str, score: float) -> SearchHit:
    """A candidate without its payload: `chunk_id` holds the point's id (a key unique to the candidate)."""
    return SearchHit(chunk_id=key, document_id="", collection_id="", document_version=0, ordinal=0, score=float(score),
                     text="", title="", section="", page=None)


def _read_hits(shard: Any, keyed: list[SearchHit], ids: dict[str, Any]) -> list[SearchHit]:
    """`keyed` (candidates keyed by point id, in order) as full hits with their scores. A point deleted since the
    search is left out, and so is a second version of the same chunk (a document re-indexed moments ago: the
    chat's version check keeps the current one)."""
    records = {str(record.id): record for record in shard.retrieve([ids[hit.chunk_id] for hit in keyed], True, False)}
    hits: list[SearchHit] = []
    seen: set[str] = set()
    for hit in keyed:
        record = records.get(hit.chunk_id)
        if record is None:
            continue
        full = hit_from_payload(record.payload or {}, hit.score)
        if full.chunk_id not in seen:
            seen.add(full.chunk_id)
            hits.append(full)
    return hits


class EdgeVectorStore:
    def __init__(self, config: StoreConfig) -> None:
        self._config = config
        self._dir = os.path.join(config.path, config.collection_name)
        self._shard: Any = None
        self._open_lock = asyncio.Lock()
        self._written_since_optimize = 0
        # Index builds are serialised: two concurrent optimize() calls would only compete.
        self._optimize_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except (ValueError, TypeError):
            raise
        except Exception as exc:
            raise StoreError(f"vector store operation failed: {exc}") from exc

    def _config_object(self) -> Any:
        qe = _qe()
        return qe.EdgeConfig(
            vectors={DENSE_VECTOR: qe.EdgeVectorParams(size=self._config.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def _open(self) -> Any:
        qe = _qe()
        config = self._config_object()
        segments = os.path.join(self._dir, "segments")
        if os.path.isdir(segments) and os.listdir(segments):
            shard = qe.EdgeShard.load(self._dir, config)
        else:
            os.makedirs(self._dir, exist_ok=True)
            shard = qe.EdgeShard.create(self._dir, config)
        existing = set(shard.info().payload_schema)
        for name in KEYWORD_FIELDS:
            if name not in existing:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Keyword))
        for name in INTEGER_FIELDS:
            if name not in existing:
                shard.update(qe.UpdateOperation.create_field_index(name, qe.PayloadSchemaType.Integer))
        return shard

    async def ensure_ready(self) -> None:
        async with self._open_lock:
            if self._shard is None:
                self._shard = await self._run(self._open)

    def _require_shard(self) -> Any:
        if self._shard is None:
            raise StoreError("the vector store is not open: call ensure_ready() first")
        return self._shard

    async def ping(self) -> None:
        shard = self._require_shard()
        await self._run(shard.info)

    async def upsert(
        self, chunks: Sequence[Chunk], dense: npt.NDArray[np.float32], sparse: Sequence[SparseVector]
    ) -> None:
        check_upsert_shapes(chunks, dense, sparse, self._config.dim)
        shard = self._require_shard()
        if not chunks:
            return
        qe = _qe()

        def write() -> None:
            for start in range(0, len(chunks), _UPSERT_BATCH):
                points = [
                    qe.Point(
                        id=point_id(chunk.chunk_id, chunk.document_version),
                        vector={
                            DENSE_VECTOR: dense[i].tolist(),
                            SPARSE_VECTOR: qe.SparseVector(
                                indices=list(sparse[i].indices), values=list(sparse[i].values)
                            ),
                        },
                        payload=chunk_payload(chunk),
                    )
                    for i, chunk in enumerate(chunks[start : start + _UPSERT_BATCH], start=start)
                ]
                shard.update(qe.UpdateOperation.upsert_points(points))

        await self._run(write)
        self._written_since_optimize += len(chunks)
        if self._written_since_optimize >= self._config.optimize_after_points:
            await self.optimize()

    async def optimize(self) -> None:
        """Build the HNSW and payload indexes for what was written (blocking, in a thread)."""
        shard = self._require_shard()
        self._written_since_optimize = 0

        def build() -> None:
            with self._optimize_lock:
                shard.optimize()

        await self._run(build)

    def _queries(
        self, access: AccessFilter, limit: int, dense: npt.NDArray[np.float32] | None, sparse: SparseVector | None,
        *, with_payload: bool,
    ) -> tuple[Any, list[Any]]:
        """The shard and its queries: the dense one, then the sparse one (each when given), limited to what `access`
        may read. No queries when `access` reads nothing or `limit` is 0."""
        access = require_access(access)
        shard = self._require_shard()
        if not access.collection_ids or limit <= 0:
            return shard, []
        qe = _qe()
        flt = access_filter(access)
        params = qe.SearchParams(exact=True) if self._config.exact_search else None
        requests = []
        if dense is not None:
            requests.append(
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(np.asarray(dense, dtype=np.float32).tolist(), using=DENSE_VECTOR),
                    filter=flt,
                    params=params,
                    with_payload=with_payload,
                )
            )
        if sparse is not None and sparse.indices:
            requests.append(
                qe.QueryRequest(
                    limit=limit,
                    query=qe.Query.Nearest(
                        qe.SparseVector(indices=list(sparse.indices), values=list(sparse.values)),
                        using=SPARSE_VECTOR,
                    ),
                    filter=flt,
                    with_payload=with_payload,
                )
            )
        return shard, requests

    async def search_ranked(
        self,
        access: AccessFilter,
        limit: int,
        dense: npt.NDArray[np.float32],
        sparse: SparseVector,
        rank: Ranking,
    ) -> list[SearchHit]:
        """Both candidate lists without payloads, ranked, and payloads read for the hits kept only (and for the
        best sparse candidate, which fusion reads), all in one worker-thread call. Reading a point's payload is
        most of what a search costs here, and the thread holds the GIL while it does: 0.65 ms for a question's 54
        candidates with payloads against 0.12 ms without, and 0.03 ms to read 9 payloads (measured on the chat
        benchmark's store); with a full 100 + 100 candidates the payloads cost several times more."""
        shard, requests = self._queries(access, limit, dense, sparse, with_payload=False)
        if not requests:
            return []
        qe = _qe()

        def work() -> list[SearchHit]:
            batches = shard.query_batch(qe.QueryBatchRequest(queries=requests))
            ids = {str(point.id): point.id for batch in batches for point in batch}
            lists = [[_keyed_hit(str(point.id), point.score) for point in batch] for batch in batches]
            dense_hits = lists[0]  # the dense query is always made; the sparse one when the question has terms
            sparse_hits = lists[1] if len(lists) > 1 else []
            if sparse_hits:
                best = sparse_hits[0].chunk_id
                sparse_hits[0] = next((replace(hit, chunk_id=best) for hit in _read_hits(shard, [sparse_hits[0]], ids)),
                                      sparse_hits[0])
            return _read_hits(shard, rank(dense_hits, sparse_hits), ids)

        return await self._run(work)

    async def search(
        self,
        access: AccessFilter,
        limit: int,
        dense: npt.NDArray[np.float32] | None = None,
        sparse: SparseVector | None = None,
    ) -> StoreSearchResults:
        shard, requests = self._queries(access, limit, dense, sparse, with_payload=True)
        if not requests:
            return StoreSearchResults([], [])
        batches = await self._run(shard.query_batch, _qe().QueryBatchRequest(queries=requests))
        lists: list[list[SearchHit]] = [
            [hit_from_payload(point.payload or {}, point.score) for point in batch] for batch in batches
        ]
        dense_hits = lists.pop(0) if dense is not None else []
        sparse_hits = lists.pop(0) if lists else []
        return StoreSearchResults(dense_hits, sparse_hits)

    async def _delete(self, flt: Any) -> None:
        shard = self._require_shard()
        await self._run(shard.update, _qe().UpdateOperation.delete_points_by_filter(flt))

    async def delete_document(self, document_id: str, keep_version: int | None = None) -> None:
        """Delete a document's chunks; with ``keep_version``, every version except that one."""
        must_not = {"document_version": keep_version} if keep_version is not None else None
        await self._delete(_match_filter(must={"document_id": document_id}, must_not=must_not))

    async def delete_document_version(self, document_id: str, document_version: int) -> None:
        await self._delete(
            _match_filter(must={"document_id": document_id, "document_version": document_version})
        )

    async def delete_chunks(self, chunks: Sequence[Chunk]) -> None:
        if not chunks:
            return
        shard = self._require_shard()
        ids = [point_id(chunk.chunk_id, chunk.document_version) for chunk in chunks]
        await self._run(shard.update, _qe().UpdateOperation.delete_points(ids))

    async def delete_collection(self, collection_id: str) -> None:
        await self._delete(_match_filter(must={"collection_id": collection_id}))

    async def count(
        self,
        collection_id: str | None = None,
        document_id: str | None = None,
        document_version: int | None = None,
    ) -> int:
        shard = self._require_shard()
        fields: dict[str, Any] = {
            key: value
            for key, value in (
                ("collection_id", collection_id),
                ("document_id", document_id),
                ("document_version", document_version),
            )
            if value is not None
        }
        request = _qe().CountRequest(exact=True, filter=_match_filter(must=fields) if fields else None)
        return int(await self._run(shard.count, request))

    async def chunk_ids(self, document_id: str, document_version: int | None = None) -> set[str]:
        shard = self._require_shard()
        qe = _qe()
        fields: dict[str, Any] = {"document_id": document_id}
        if document_version is not None:
            fields["document_version"] = document_version
        flt = _match_filter(must=fields)

        def scroll_all() -> set[str]:
            found: set[str] = set()
            offset = None
            while True:
                records, offset = shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=flt, with_payload=["chunk_id"])
                )
                found.update(str((record.payload or {})["chunk_id"]) for record in records)
                if offset is None:
                    return found

        return await self._run(scroll_all)

    async def close(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            await self._run(shard.close)
