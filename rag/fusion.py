"""Fuse the dense and the sparse candidate lists into one ranking."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from rag.chunk import embedding_text
from rag.sparse import tokenize
from rag.types import SearchHit

FusionMethod = Literal["rrf", "minmax", "maxnorm", "zscore", "adaptive"]


@dataclass(frozen=True, slots=True)
class FusionConfig:
    method: FusionMethod = "adaptive"
    # Fixed weight of the dense list for "minmax" and "zscore".
    dense_weight: float = 0.5
    rrf_k: int = 60
    # "adaptive": the dense weight falls linearly from max to min as the best lexical hit covers
    # more of the question's terms (see lexical_coverage). Chosen on SyllabusQA and MedQuAD/LiveQA
    # together, one setting for both (docs/rag.md).
    min_dense_weight: float = 0.4
    max_dense_weight: float = 0.9


def rrf(
    dense: Sequence[SearchHit], sparse: Sequence[SearchHit], k: int = 60, limit: int | None = None
) -> list[SearchHit]:
    scores: dict[str, float] = {}
    hits: dict[str, SearchHit] = {}
    for ranking in (dense, sparse):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
            hits.setdefault(hit.chunk_id, hit)
    return _ranked(hits, scores, limit)


def _minmax(hits: Sequence[SearchHit]) -> dict[str, float]:
    if not hits:
        return {}
    top = max(hit.score for hit in hits)
    low = min(hit.score for hit in hits)
    span = top - low
    return {hit.chunk_id: (hit.score - low) / span if span > 0 else 1.0 for hit in hits}


def _maxnorm(hits: Sequence[SearchHit]) -> dict[str, float]:
    """Scores as a share of the list's best: keeps how steeply each list falls off (BM25 often
    has one clear winner, cosine a gentle slope), which min-max would stretch to 0..1."""
    if not hits:
        return {}
    top = max(hit.score for hit in hits)
    if top <= 0:
        return _minmax(hits)
    return {hit.chunk_id: hit.score / top for hit in hits}


def _zscore(hits: Sequence[SearchHit]) -> dict[str, float]:
    if not hits:
        return {}
    values = [hit.score for hit in hits]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    if std == 0:
        return {hit.chunk_id: 0.0 for hit in hits}
    return {hit.chunk_id: (hit.score - mean) / std for hit in hits}


def _ranked(hits: dict[str, SearchHit], scores: dict[str, float], limit: int | None = None) -> list[SearchHit]:
    """The hits best first, each with its fused score; only the first `limit` when given (a question keeps a
    handful of its 200 candidates, and copying each hit costs more than ranking them)."""
    order = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:limit]
    return [replace(hits[chunk_id], score=scores[chunk_id]) for chunk_id in order]


def weighted_scores(
    dense: Sequence[SearchHit], sparse: Sequence[SearchHit], method: FusionMethod, dense_weight: float,
    limit: int | None = None,
) -> list[SearchHit]:
    normalise = {"minmax": _minmax, "maxnorm": _maxnorm}.get(method, _zscore)
    dense_norm, sparse_norm = normalise(dense), normalise(sparse)
    # A candidate missing from one list scored below that list's cut-off: count it as the floor.
    dense_floor = min(dense_norm.values(), default=0.0)
    sparse_floor = min(sparse_norm.values(), default=0.0)
    hits = {hit.chunk_id: hit for hit in (*sparse, *dense)}
    scores = {
        chunk_id: dense_weight * dense_norm.get(chunk_id, dense_floor)
        + (1.0 - dense_weight) * sparse_norm.get(chunk_id, sparse_floor)
        for chunk_id in hits
    }
    return _ranked(hits, scores, limit)


def lexical_coverage(query_terms: frozenset[str], sparse: Sequence[SearchHit]) -> float:
    """The share of the question's terms that the best lexical match contains (0..1).

    When the top BM25 hit holds most of the question, the keyword evidence is specific (a short
    question about a named policy); when it holds a small part, BM25 matched a fragment of a long,
    loosely worded question and the embedding should lead.
    """
    if not query_terms or not sparse:
        return 0.0
    top = sparse[0]
    hit_terms = set(tokenize(embedding_text(top.title, top.section, top.text)))
    return len(query_terms & hit_terms) / len(query_terms)


def adaptive_dense_weight(query_terms: frozenset[str], sparse: Sequence[SearchHit], config: FusionConfig) -> float:
    coverage = lexical_coverage(query_terms, sparse)
    return config.max_dense_weight - (config.max_dense_weight - config.min_dense_weight) * coverage


def fuse(
    dense: Sequence[SearchHit],
    sparse: Sequence[SearchHit],
    config: FusionConfig | None = None,
    query: str = "",
    limit: int | None = None,
) -> list[SearchHit]:
    """One ranking from both lists (its first `limit` hits when given); ``query`` is needed by the (default)
    adaptive method."""
    config = config or FusionConfig()
    if not dense:
        return list(sparse[:limit])
    if not sparse:
        return list(dense[:limit])
    if config.method == "rrf":
        return rrf(dense, sparse, config.rrf_k, limit)
    if config.method == "adaptive":
        weight = adaptive_dense_weight(frozenset(tokenize(query)), sparse, config)
        return weighted_scores(dense, sparse, "maxnorm", weight, limit)
    return weighted_scores(dense, sparse, config.method, config.dense_weight, limit)
