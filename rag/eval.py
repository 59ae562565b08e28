"""Retrieval evaluation on a BEIR-layout dataset through the real pipeline (parse, chunk, embed, store).

Passages are chunked like any upload; a document's rank is that of its best chunk. Metrics come
from pytrec_eval (trec_eval's own code): nDCG@10, Recall@100 and MRR@10, over the queries that
have at least one relevant judgement.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rag.chunk import chunk_document
from rag.embed import Embedder, Reranker
from rag.fusion import FusionConfig, fuse
from rag.ingest import store_chunks
from rag.parse import parse_document
from rag.retrieve import Retriever
from rag.sparse import Bm25Encoder
from rag.store import StoreConfig, open_store
from rag.types import AccessFilter, Chunk, SearchHit

DEFAULT_COLLECTION = "all"
CANDIDATES = 100
_INDEX_BATCH = 2048


@dataclass(frozen=True, slots=True)
class BeirDataset:
    name: str
    corpus: dict[str, dict[str, Any]]
    queries: dict[str, dict[str, Any]]
    qrels: dict[str, dict[str, int]]


@dataclass(slots=True)
class EvalRun:
    """Per setting ("filtered"/"unfiltered"), per mode, the ranked document ids of each query."""

    dataset: str
    chunk_count: int
    settings: dict[str, dict[str, dict[str, list[SearchHit]]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def load_beir(directory: str) -> BeirDataset:
    def read_jsonl(name: str) -> dict[str, dict[str, Any]]:
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            rows = (json.loads(line) for line in handle if line.strip())
            return {str(row["_id"]): row for row in rows}

    qrels: dict[str, dict[str, int]] = {}
    with open(os.path.join(directory, "qrels.tsv"), encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)  # header
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    # Queries with no relevant document measure nothing; trec_eval convention drops them.
    qrels = {qid: docs for qid, docs in qrels.items() if any(score > 0 for score in docs.values())}
    name = os.path.basename(os.path.normpath(directory))
    return BeirDataset(name, read_jsonl("corpus.jsonl"), read_jsonl("queries.jsonl"), qrels)


def corpus_chunks(dataset: BeirDataset, embedder: Embedder, filter_field: str | None) -> list[Chunk]:
    """Each passage goes through parse_document and chunk_document like an uploaded text file."""
    chunks: list[Chunk] = []
    for doc_id, row in dataset.corpus.items():
        text = str(row.get("text") or "")
        if not text.strip():
            continue
        parsed = parse_document(text.encode("utf-8"), f"{doc_id}.txt")
        parsed = replace(parsed, title=str(row.get("title") or parsed.title))
        collection = DEFAULT_COLLECTION
        if filter_field:
            collection = str((row.get("metadata") or {}).get(filter_field, DEFAULT_COLLECTION))
        chunks.extend(
            chunk_document(parsed, doc_id, collection, 1, embedder.count_tokens, embedder.max_chunk_tokens, 32)
        )
    return chunks


def document_run(hits: list[SearchHit], depth: int = CANDIDATES) -> dict[str, float]:
    """Document scores for trec_eval: a document ranks where its best chunk ranks."""
    run: dict[str, float] = {}
    for rank, hit in enumerate(hits):
        if hit.document_id not in run:
            run[hit.document_id] = float(len(hits) - rank)  # strictly decreasing, ties impossible
        if len(run) >= depth:
            break
    return run


def metrics(qrels: dict[str, dict[str, int]], runs: dict[str, dict[str, float]]) -> dict[str, float]:
    import pytrec_eval

    qrels = {qid: docs for qid, docs in qrels.items() if qid in runs}
    if not qrels:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "queries": 0}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(runs)
    top10 = {qid: dict(sorted(run.items(), key=lambda kv: -kv[1])[:10]) for qid, run in runs.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    n = len(qrels)

    def mean(table: dict[str, dict[str, float]], key: str) -> float:
        return round(sum(table[qid][key] for qid in qrels if qid in table) / n, 4)

    return {
        "ndcg@10": mean(full, "ndcg_cut_10"),
        "recall@100": mean(full, "recall_100"),
        "mrr@10": mean(mrr, "recip_rank"),
        "queries": n,
    }


def score_run(dataset: BeirDataset, per_query: dict[str, dict[str, list[SearchHit]]]) -> dict[str, dict[str, float]]:
    modes = sorted({mode for lists in per_query.values() for mode in lists})
    return {
        mode: metrics(dataset.qrels, {qid: document_run(lists[mode]) for qid, lists in per_query.items()})
        for mode in modes
    }


async def run_eval(
    dataset_dir: str,
    embedder: Embedder,
    *,
    filter_field: str | None = None,
    query_field: str = "text",
    reranker: Reranker | None = None,
    fusion: FusionConfig | None = None,
    store_dir: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[EvalRun, dict[str, dict[str, dict[str, float]]]]:
    say = log or (lambda _message: None)
    dataset = load_beir(dataset_dir)
    started = time.perf_counter()
    chunks = await asyncio.to_thread(corpus_chunks, dataset, embedder, filter_field)
    run = EvalRun(dataset.name, len(chunks))
    run.timings["parse_chunk_s"] = round(time.perf_counter() - started, 2)
    say(f"{dataset.name}: {len(dataset.corpus)} passages -> {len(chunks)} chunks")
    with tempfile.TemporaryDirectory(dir=store_dir) as tmp:
        # Exact dense search: the figures are then repeatable and comparable with exact baselines.
        store = open_store(StoreConfig(path=tmp, dim=embedder.dim, optimize_after_points=10**9, exact_search=True))
        await store.ensure_ready()
        encoder = Bm25Encoder()
        started = time.perf_counter()
        for offset in range(0, len(chunks), _INDEX_BATCH):
            await store_chunks(chunks[offset : offset + _INDEX_BATCH], embedder, store, encoder)
            say(f"indexed {min(offset + _INDEX_BATCH, len(chunks))}/{len(chunks)} chunks")
        await store.optimize()
        run.timings["index_s"] = round(time.perf_counter() - started, 2)
        retriever = Retriever(embedder, store, reranker, sparse_encoder=encoder, fusion=fusion)
        collections = frozenset(chunk.collection_id for chunk in chunks)
        settings = {"unfiltered": None} if not filter_field else {"filtered": filter_field, "unfiltered": None}
        started = time.perf_counter()
        for setting, field_name in settings.items():
            per_query: dict[str, dict[str, list[SearchHit]]] = {}
            for qid in dataset.qrels:
                query = dataset.queries.get(qid)
                if query is None:
                    continue
                allowed = frozenset({str(query.get(field_name, ""))}) if field_name else collections
                lists = await retriever.search_all_modes(str(query[query_field]), AccessFilter(allowed), CANDIDATES)
                if reranker is not None:
                    lists["reranked"] = await retriever.rerank(str(query[query_field]), lists["hybrid"], 10)
                per_query[qid] = lists
            run.settings[setting] = per_query
            say(f"{setting}: {len(per_query)} queries searched")
        run.timings["search_s"] = round(time.perf_counter() - started, 2)
        await store.close()
    report = {setting: score_run(dataset, per_query) for setting, per_query in run.settings.items()}
    return run, report


def rescore_fusion(
    run: EvalRun, dataset: BeirDataset, fusion: FusionConfig, query_field: str = "text"
) -> dict[str, dict[str, dict[str, float]]]:
    """Re-score the hybrid mode under another fusion setting, reusing the stored candidate lists."""
    out = {}
    for setting, per_query in run.settings.items():
        fused = {
            qid: {"hybrid": fuse(lists["dense"], lists["sparse"], fusion, str(dataset.queries[qid][query_field]))}
            for qid, lists in per_query.items()
        }
        out[setting] = score_run(dataset, fused)
    return out


def format_table(dataset: str, report: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [f"{dataset}", f"{'setting':<12} {'mode':<9} {'nDCG@10':>8} {'R@100':>8} {'MRR@10':>8} {'queries':>8}"]
    for setting, modes in report.items():
        for mode, values in modes.items():
            lines.append(
                f"{setting:<12} {mode:<9} {values['ndcg@10']:>8.4f} {values['recall@100']:>8.4f} "
                f"{values['mrr@10']:>8.4f} {int(values['queries']):>8}"
            )
    return "\n".join(lines)
