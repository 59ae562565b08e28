"""Query latency of filtered hybrid search at 10,000 and 200,000 chunks, per vector-store backend.

    .venv/bin/python bench/bench_query.py [--sizes 10000,200000] [--backends edge,qdrant-local] [--queries 200]

Prints one JSON object. For each backend and size: the time to load and index the chunks, and
p50/p99 of (a) the store's filtered top-10 dense and BM25 queries, (b) the filtered hybrid search
(dense + sparse top-100 in one batch, fused, top 10), (b') the same search ranked inside the store, as the
retriever runs it (`search_ranked`: Qdrant Edge then reads the payloads of the 10 kept hits only) and (c) the
whole query path: embedding the question with the real model, then the hybrid search.

Embedding 200,000 passages would take hours on a laptop CPU, so the points are made from real
passage embeddings and BM25 vectors (SyllabusQA, from ../shared/eval) with small random
perturbations of the dense part; the engine's work per query does not depend on where vectors
came from. Chunks are spread over 50 collections and every query may read 5 of them (10%).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.chunk import embedding_text  # noqa: E402
from rag.embed import load_embedder  # noqa: E402
from rag.eval import load_beir  # noqa: E402
from rag.fusion import fuse  # noqa: E402
from rag.retrieve import Retriever  # noqa: E402
from rag.sparse import Bm25Encoder  # noqa: E402
from rag.store import StoreConfig, VectorStore, open_store  # noqa: E402
from rag.types import AccessFilter, Chunk  # noqa: E402

DATASET = Path(__file__).resolve().parents[2] / "shared" / "eval" / "syllabusqa"
COLLECTIONS = 50
ALLOWED = frozenset(f"c{i}" for i in range(5))
UPSERT_BATCH = 2_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 3)


async def fill(store: VectorStore, size: int, texts: list[str], base: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    encoder = Bm25Encoder()
    sparse_cache = [encoder.encode_document(text) for text in texts]
    for start in range(0, size, UPSERT_BATCH):
        count = min(UPSERT_BATCH, size - start)
        picks = rng.integers(0, len(texts), size=count)
        dense = base[picks] + rng.normal(scale=0.02, size=(count, base.shape[1])).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        chunks = [
            Chunk(
                chunk_id=f"bench-{start + i}:0:{int(pick):08d}",
                document_id=f"bench-{(start + i) // 20}",
                collection_id=f"c{((start + i) // 20) % COLLECTIONS}",
                document_version=1,
                ordinal=0,
                text=texts[pick][:400],
                title="",
                section="",
                page=None,
                token_count=0,
                content_hash=f"{int(pick):08d}",
            )
            for i, pick in enumerate(picks)
        ]
        await store.upsert(chunks, dense.astype(np.float32), [sparse_cache[p] for p in picks])


async def bench_backend(
    backend: str, size: int, queries: list[str], query_vectors: np.ndarray, texts: list[str], base: np.ndarray,
    embedder: object, max_queries: int,
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        # qdrant-client local mode in memory: its on-disk variant pickles every point into SQLite.
        path = "" if backend == "qdrant-local" else tmp
        config = StoreConfig(path=path, dim=base.shape[1], backend=backend, optimize_after_points=10**9)  # type: ignore[arg-type]
        store = open_store(config)
        await store.ensure_ready()
        started = time.perf_counter()
        await fill(store, size, texts, base, seed=size)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        await store.optimize()
        indexed = time.perf_counter() - started
        access = AccessFilter(ALLOWED)
        encoder = Bm25Encoder()
        n = min(max_queries, len(queries))
        search_ms: list[float] = []
        for query, vector in zip(queries[:n], query_vectors[:n], strict=True):
            t0 = time.perf_counter()
            results = await store.search(access, 100, dense=vector, sparse=encoder.encode_query(query))
            hits = fuse(results.dense, results.sparse)[:10]
            search_ms.append((time.perf_counter() - t0) * 1000)
            assert hits and all(hit.collection_id in ALLOWED for hit in hits)
        # The same hybrid search as the retriever runs it: the store ranks the candidates with the fusion and reads
        # whole hits for the 10 kept only (Qdrant Edge reads no other payload).
        ranked_ms: list[float] = []
        for query, vector in zip(queries[:n], query_vectors[:n], strict=True):
            t0 = time.perf_counter()
            ranked = await store.search_ranked(access, 100, vector, encoder.encode_query(query),
                                               lambda dense, sparse: fuse(dense, sparse, limit=10))
            ranked_ms.append((time.perf_counter() - t0) * 1000)
            assert ranked and all(hit.collection_id in ALLOWED for hit in ranked)
        # The single-list queries the 20 ms target speaks of: filtered top-10, dense or BM25.
        dense10_ms: list[float] = []
        sparse10_ms: list[float] = []
        for query, vector in zip(queries[:n], query_vectors[:n], strict=True):
            t0 = time.perf_counter()
            await store.search(access, 10, dense=vector)
            dense10_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            await store.search(access, 10, sparse=encoder.encode_query(query))
            sparse10_ms.append((time.perf_counter() - t0) * 1000)
        retriever = Retriever(embedder, store)  # type: ignore[arg-type]
        full_ms: list[float] = []
        for query in queries[:n]:
            t0 = time.perf_counter()
            await retriever.search(query, access, top_k=10)
            full_ms.append((time.perf_counter() - t0) * 1000)
        counted = await store.count()
        await store.close()
    return {
        "backend": backend,
        "chunks": counted,
        "load_s": round(loaded, 1),
        "index_build_s": round(indexed, 1),
        "queries": n,
        "dense_top10_ms": {"p50": percentile(dense10_ms, 50), "p99": percentile(dense10_ms, 99)},
        "sparse_top10_ms": {"p50": percentile(sparse10_ms, 50), "p99": percentile(sparse10_ms, 99)},
        "hybrid_search_ms": {"p50": percentile(search_ms, 50), "p99": percentile(search_ms, 99),
                             "mean": round(statistics.fmean(search_ms), 3)},
        "hybrid_search_ranked_in_store_ms": {"p50": percentile(ranked_ms, 50), "p99": percentile(ranked_ms, 99),
                                             "mean": round(statistics.fmean(ranked_ms), 3)},
        "embed_and_search_ms": {"p50": percentile(full_ms, 50), "p99": percentile(full_ms, 99)},
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--backends", default="edge,qdrant-local")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--local-queries", type=int, default=20,
                        help="qdrant-client local mode scans in Python (seconds a query): cap its queries")
    parser.add_argument("--local-large-queries", type=int, default=3,
                        help="queries for qdrant-client local mode above 20,000 chunks")
    parser.add_argument("--passages", type=int, default=800, help="real passages embedded as the base set")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dataset = load_beir(str(DATASET))
    embedder = load_embedder()
    rows = list(dataset.corpus.values())[: args.passages]
    texts = [embedding_text(str(r.get("title", "")), "", str(r["text"])) for r in rows]
    started = time.perf_counter()
    base = embedder.embed_documents(texts)
    base_s = time.perf_counter() - started
    queries = [str(q["text"]) for q in list(dataset.queries.values())[: args.queries]]
    query_vectors = embedder.embed_documents(queries)
    results = []
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            cap = args.queries
            if backend == "qdrant-local":
                cap = args.local_queries if size <= 20_000 else args.local_large_queries
            row = await bench_backend(backend, size, queries, query_vectors, texts, base, embedder, cap)
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
    print(json.dumps({
        "benchmark": "query_latency",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "filter": f"{len(ALLOWED)} of {COLLECTIONS} collections",
        "base_passages": len(texts),
        "base_embed_s": round(base_s, 1),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
