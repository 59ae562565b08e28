"""Fusion of the dense and sparse rankings (pure functions, hand-checked values)."""

from __future__ import annotations

import pytest

from rag.fusion import FusionConfig, fuse, rrf
from rag.types import SearchHit


def hit(chunk_id: str, score: float) -> SearchHit:
    return SearchHit(chunk_id, chunk_id.split(":")[0], "c", 1, 0, score, chunk_id, "", "", None)


DENSE = [hit("a:0", 0.9), hit("b:0", 0.8), hit("c:0", 0.1)]
SPARSE = [hit("d:0", 12.0), hit("b:0", 11.0), hit("c:0", 1.0)]


def ids(hits: list[SearchHit]) -> list[str]:
    return [h.chunk_id for h in hits]


def test_rrf_rewards_agreement() -> None:
    fused = rrf(DENSE, SPARSE, k=60)
    assert ids(fused)[0] == "b:0"  # second in both lists beats first in one
    assert fused[0].score == pytest.approx(2 / 62)
    assert set(ids(fused)) == {"a:0", "b:0", "c:0", "d:0"}


def test_minmax_fusion_uses_scores_not_just_ranks() -> None:
    fused = fuse(DENSE, SPARSE, FusionConfig(method="minmax", dense_weight=0.5))
    # b: 0.5*0.875 + 0.5*(10/11) beats a: 0.5*1 + 0.5*0 (a is absent from sparse: its floor is 0).
    assert ids(fused)[0] == "b:0"
    assert ids(fused)[-1] == "c:0"  # last in both lists after normalisation
    assert fused[0].score == pytest.approx(0.5 * 0.875 + 0.5 * 10 / 11)


def test_weights_move_the_ranking_towards_one_list() -> None:
    dense_heavy = fuse(DENSE, SPARSE, FusionConfig(method="minmax", dense_weight=0.95))
    sparse_heavy = fuse(DENSE, SPARSE, FusionConfig(method="minmax", dense_weight=0.05))
    assert ids(dense_heavy)[0] == "a:0"
    assert ids(sparse_heavy)[0] == "d:0"


def test_one_empty_list_returns_the_other_unchanged() -> None:
    assert fuse(DENSE, []) == DENSE
    assert fuse([], SPARSE) == SPARSE
    assert fuse([], []) == []


def test_every_candidate_appears_once() -> None:
    for method in ("rrf", "minmax", "zscore", "adaptive"):
        fused = fuse(DENSE, SPARSE, FusionConfig(method=method))
        assert sorted(ids(fused)) == ["a:0", "b:0", "c:0", "d:0"]
        scores = [h.score for h in fused]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("method", ["rrf", "minmax", "maxnorm", "zscore", "adaptive"])
def test_a_limited_fusion_is_the_head_of_the_whole_ranking(method: str) -> None:
    """A question keeps its top few passages: fusing with a limit gives exactly the first hits, scores included."""
    config = FusionConfig(method=method)  # type: ignore[arg-type]
    whole = fuse(DENSE, SPARSE, config, "b d")
    for limit in (0, 1, 2, 3, 10):
        assert fuse(DENSE, SPARSE, config, "b d", limit=limit) == whole[:limit]
    assert fuse(DENSE, [], config, limit=2) == DENSE[:2]
    assert fuse([], SPARSE, config, limit=1) == SPARSE[:1]


def test_adaptive_weight_trusts_bm25_when_its_top_hit_covers_the_question() -> None:
    from rag.fusion import adaptive_dense_weight, lexical_coverage

    config = FusionConfig()
    covering = [hit("p:0", 9.0)]
    covering[0] = SearchHit("p:0", "p", "c", 1, 0, 9.0, "Late homework loses ten percent", "", "", None)
    terms = frozenset({"late", "homework"})
    assert lexical_coverage(terms, covering) == 1.0
    assert adaptive_dense_weight(terms, covering, config) == pytest.approx(config.min_dense_weight)
    long_question = frozenset({"late", "homework", "grandmother", "hospital", "excuse", "email"})
    assert lexical_coverage(long_question, covering) == pytest.approx(2 / 6)
    assert config.min_dense_weight < adaptive_dense_weight(long_question, covering, config) < config.max_dense_weight
    assert adaptive_dense_weight(terms, [], config) == pytest.approx(config.max_dense_weight)


def test_adaptive_fusion_follows_the_query() -> None:
    dense = [hit("a:0", 0.9), hit("b:0", 0.5)]
    sparse = [SearchHit("b:0", "b", "c", 1, 0, 9.0, "late homework policy", "", "", None), hit("a:0", 1.0)]
    assert ids(fuse(dense, sparse, query="late homework"))[0] == "b:0"
    assert ids(fuse(dense, sparse, query="my child was ill and missed class, what should we do now"))[0] == "a:0"
