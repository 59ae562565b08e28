"""Retrieval with the real model on both stores: modes, access filters, and fusion."""

from __future__ import annotations

import pytest

from rag.embed import Embedder
from rag.errors import AccessFilterRequired
from rag.fusion import fuse
from rag.ingest import index_document
from rag.retrieve import Retriever
from rag.store import VectorStore
from rag.types import AccessFilter

DOCUMENTS = {
    ("homework", "school"): "Late homework loses ten percent of the grade for each day it is late.",
    ("uniform", "school"): "Students wear a navy blazer and a white shirt from October to April.",
    ("handover", "hospital"): "Shift handover between nurses happens at seven in the morning.",
    ("visitors", "hospital"): "Visitors may come to the ward between two and eight in the afternoon.",
    ("payroll", "finance"): "Salaries are paid on the last working day of every month.",
}


@pytest.fixture
async def retriever(model_store: VectorStore, embedder: Embedder) -> Retriever:
    for (document_id, collection), text in DOCUMENTS.items():
        await index_document(text.encode(), f"{document_id}.txt", document_id, collection, 1, embedder, model_store)
    return Retriever(embedder, model_store)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
async def test_each_mode_finds_the_right_passage(retriever: Retriever, mode: str) -> None:
    everything = AccessFilter(frozenset({"school", "hospital", "finance"}))
    hits = await retriever.search("When is the nurses' shift handover?", everything, top_k=3, mode=mode)  # type: ignore[arg-type]
    assert hits[0].document_id == "handover"
    assert len(hits) <= 3


async def test_dense_mode_finds_paraphrases_without_shared_words(retriever: Retriever) -> None:
    everything = AccessFilter(frozenset({"school", "hospital", "finance"}))
    hits = await retriever.search("what clothes do pupils have to put on", everything, top_k=1, mode="dense")
    assert hits[0].document_id == "uniform"


async def test_hits_come_only_from_allowed_collections(retriever: Retriever) -> None:
    hits = await retriever.search("When is the shift handover?", AccessFilter(frozenset({"school"})), top_k=10)
    assert hits and {hit.collection_id for hit in hits} == {"school"}


async def test_excluded_documents_are_not_found(retriever: Retriever) -> None:
    access = AccessFilter(frozenset({"hospital"}), excluded_document_ids=frozenset({"handover"}))
    hits = await retriever.search("shift handover", access, top_k=10)
    assert "handover" not in {hit.document_id for hit in hits}


async def test_empty_access_returns_nothing(retriever: Retriever) -> None:
    assert await retriever.search("homework", AccessFilter(frozenset()), top_k=10) == []


async def test_missing_access_filter_is_an_error(retriever: Retriever) -> None:
    with pytest.raises(AccessFilterRequired):
        await retriever.search("homework", None, top_k=10)  # type: ignore[arg-type]


async def test_unknown_mode_is_an_error(retriever: Retriever) -> None:
    with pytest.raises(ValueError, match="unknown search mode"):
        await retriever.search("homework", AccessFilter(frozenset({"school"})), mode="magic")  # type: ignore[arg-type]


def test_access_filter_insists_on_frozensets() -> None:
    with pytest.raises(TypeError):
        AccessFilter({"school"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AccessFilter("school")  # type: ignore[arg-type]


QUESTIONS = ["When is the nurses' shift handover?", "what clothes do pupils have to put on", "homework late penalty",
             "When are visitors allowed on the ward and when are salaries paid?", "zebra"]


@pytest.mark.parametrize("top_k", [1, 3, 10])
async def test_a_hybrid_search_keeps_exactly_what_fusing_both_whole_lists_keeps(
    retriever: Retriever, embedder: Embedder, top_k: int
) -> None:
    """The store ranks the candidates itself (Qdrant Edge reads the payloads of the kept hits only): the hits,
    their order, scores and every payload field equal fusing both lists read whole."""
    access = AccessFilter(frozenset({"school", "hospital"}), excluded_document_ids=frozenset({"uniform"}))
    for question in QUESTIONS:
        vector = await embedder.aembed_query(question)
        whole = await retriever.store.search(access, retriever.candidates, dense=vector,
                                             sparse=retriever.sparse_encoder.encode_query(question))
        expected = fuse(whole.dense, whole.sparse, retriever.fusion, question, limit=top_k)
        got = await retriever.search(question, access, top_k=top_k, query_vector=vector)
        assert [(h.chunk_id, h.document_id, h.collection_id, h.document_version, h.ordinal, h.text, h.title, h.section,
                 h.page) for h in got] == [
            (h.chunk_id, h.document_id, h.collection_id, h.document_version, h.ordinal, h.text, h.title, h.section,
             h.page) for h in expected], question
        assert [h.score for h in got] == pytest.approx([h.score for h in expected]), question
        assert {h.collection_id for h in got} <= {"school", "hospital"} and "uniform" not in {h.document_id for h in got}


async def test_a_chunk_stored_in_two_versions_is_kept_once(retriever: Retriever, embedder: Embedder) -> None:
    """Re-indexing writes the new version before the old one is dropped: a search in between keeps one of them."""
    text = DOCUMENTS[("handover", "hospital")]
    await index_document(text.encode(), "handover.txt", "handover", "hospital", 2, embedder, retriever.store)
    hits = await retriever.search("When is the nurses' shift handover?", AccessFilter(frozenset({"hospital"})), top_k=10)
    chunk_ids = [hit.chunk_id for hit in hits]
    assert hits[0].document_id == "handover" and len(chunk_ids) == len(set(chunk_ids))
