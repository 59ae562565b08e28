"""Ingestion throughput (chunks/s) beside the raw model.encode throughput on the same chunk texts.

    .venv/bin/python bench/bench_ingest.py [--documents 12] [--rounds 2]

Documents are SyllabusQA syllabi (../shared/eval), one plain-text file per syllabus, indexed with
``rag.ingest.index_document`` (parse, chunk, embed, BM25, upsert into a fresh Qdrant Edge shard).
The raw baseline encodes exactly the texts the pipeline embedded, with the same model and batch
size. Rounds alternate raw and pipeline so that a noisy neighbour on the machine hurts both alike;
the ratio uses each side's best round. Prints one JSON object; the target ratio is >= 0.85.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.embed import SentenceTransformerEmbedder, load_embedder  # noqa: E402
from rag.eval import load_beir  # noqa: E402
from rag.ingest import chunk_texts, index_document  # noqa: E402
from rag.store import StoreConfig, open_store  # noqa: E402

DATASET = Path(__file__).resolve().parents[2] / "shared" / "eval" / "syllabusqa"
BATCH = 64


def syllabus_documents(limit: int) -> list[tuple[str, bytes]]:
    dataset = load_beir(str(DATASET))
    passages: dict[str, list[str]] = defaultdict(list)
    for row in dataset.corpus.values():
        passages[str(row["metadata"]["syllabus"])].append(str(row["text"]))
    return [(name, "\n\n".join(texts).encode("utf-8")) for name, texts in list(passages.items())[:limit]]


async def pipeline_round(embedder: SentenceTransformerEmbedder, documents: list[tuple[str, bytes]]) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(StoreConfig(path=tmp, dim=embedder.dim))
        await store.ensure_ready()
        started = time.perf_counter()
        for index, (name, data) in enumerate(documents):
            await index_document(data, f"{name}.txt", f"doc-{index}", "bench", 1, embedder, store)
        elapsed = time.perf_counter() - started
        # The texts the pipeline embedded, for the raw baseline (read back outside the timing).
        from rag.chunk import chunk_document
        from rag.parse import parse_document

        texts: list[str] = []
        for index, (name, data) in enumerate(documents):
            parsed = parse_document(data, f"{name}.txt")
            texts.extend(chunk_texts(chunk_document(
                parsed, f"doc-{index}", "bench", 1, embedder.count_tokens, embedder.max_chunk_tokens, 32
            )))
        assert await store.count() == len(texts)
        await store.close()
    return elapsed, texts


def raw_round(embedder: SentenceTransformerEmbedder, texts: list[str]) -> float:
    started = time.perf_counter()
    embedder.model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=12, help="number of syllabi to ingest per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = load_embedder()
    assert isinstance(embedder, SentenceTransformerEmbedder)
    documents = syllabus_documents(args.documents)
    # Warm-up: the first encode pays for lazy initialisation in torch.
    raw_round(embedder, ["warm up"] * 8)
    pipeline_s: list[float] = []
    raw_s: list[float] = []
    texts: list[str] = []
    for _ in range(args.rounds):
        elapsed, texts = await pipeline_round(embedder, documents)
        pipeline_s.append(elapsed)
        raw_s.append(raw_round(embedder, texts))
    chunks = len(texts)
    ingest_rate = chunks / min(pipeline_s)
    raw_rate = chunks / min(raw_s)
    print(json.dumps({
        "benchmark": "ingest_throughput",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": embedder.model_name,
        "documents": len(documents),
        "bytes": sum(len(data) for _, data in documents),
        "chunks": chunks,
        "rounds": args.rounds,
        "pipeline_s": [round(s, 2) for s in pipeline_s],
        "raw_encode_s": [round(s, 2) for s in raw_s],
        "ingest_chunks_per_s": round(ingest_rate, 2),
        "raw_encode_chunks_per_s": round(raw_rate, 2),
        "ratio": round(ingest_rate / raw_rate, 3),
        "target_ratio": 0.85,
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
