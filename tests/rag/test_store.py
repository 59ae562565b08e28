"""The vector-store contract, run against both backends (Qdrant Edge and qdrant-client)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.chunk import content_hash, make_chunk_id
from rag.errors import AccessFilterRequired
from rag.sparse import Bm25Encoder
from rag.store import VectorStore
from rag.types import AccessFilter, Chunk, SparseVector
from tests.rag.conftest import open_test_store

ENCODER = Bm25Encoder()


def make_chunk(document_id: str, collection_id: str, ordinal: int, text: str, version: int = 1) -> Chunk:
    return Chunk(
        chunk_id=make_chunk_id(document_id, ordinal, content_hash(text)),
        document_id=document_id,
        collection_id=collection_id,
        document_version=version,
        ordinal=ordinal,
        text=text,
        title=f"Title of {document_id}",
        section="Section 1",
        page=ordinal + 1,
        token_count=len(text.split()),
        content_hash="h",
    )


def vectors_for(chunks: list[Chunk]) -> tuple[np.ndarray, list[SparseVector]]:
    # Deterministic synthetic dense vectors; the sparse ones come from the real BM25 encoder.
    rng = np.random.default_rng(7)
    dense = rng.normal(size=(len(chunks), 4)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    return dense, [ENCODER.encode_document(chunk.text) for chunk in chunks]


CORPUS = [
    make_chunk("doc-a", "policies", 0, "Late homework loses ten percent per day."),
    make_chunk("doc-a", "policies", 1, "Attendance is taken at every lecture."),
    make_chunk("doc-b", "policies", 0, "Exams may be retaken once with a doctor's note."),
    make_chunk("doc-c", "nursing", 0, "Shift handover happens at seven in the morning."),
    make_chunk("doc-d", "nursing", 0, "Medication rounds follow the handover checklist."),
]


async def load_corpus(store: VectorStore, chunks: list[Chunk] = CORPUS) -> np.ndarray:
    dense, sparse = vectors_for(chunks)
    await store.upsert(chunks, dense, sparse)
    return dense


async def test_ping_and_exact_counts(small_store: VectorStore) -> None:
    await small_store.ping()
    assert await small_store.count() == 0
    await load_corpus(small_store)
    assert await small_store.count() == 5
    assert await small_store.count(collection_id="policies") == 3
    assert await small_store.count(collection_id="nursing") == 2
    assert await small_store.count(document_id="doc-a") == 2
    assert await small_store.count(document_id="doc-a", document_version=2) == 0
    assert await small_store.chunk_ids("doc-a") == {CORPUS[0].chunk_id, CORPUS[1].chunk_id}


async def test_search_returns_payload_and_respects_the_collection_filter(small_store: VectorStore) -> None:
    dense = await load_corpus(small_store)
    results = await small_store.search(
        AccessFilter(frozenset({"nursing"})), 10, dense=dense[3], sparse=ENCODER.encode_query("handover")
    )
    assert {hit.collection_id for hit in results.dense} == {"nursing"}
    assert results.dense[0].chunk_id == CORPUS[3].chunk_id
    assert results.dense[0].score == pytest.approx(1.0, abs=1e-4)
    assert {hit.document_id for hit in results.sparse} == {"doc-c", "doc-d"}
    top = results.dense[0]
    assert (top.title, top.section, top.page, top.ordinal, top.document_version) == (
        "Title of doc-c",
        "Section 1",
        1,
        0,
        1,
    )
    assert top.text == CORPUS[3].text


async def test_sparse_search_ranks_by_bm25(small_store: VectorStore) -> None:
    await load_corpus(small_store)
    everything = AccessFilter(frozenset({"policies", "nursing"}))
    results = await small_store.search(everything, 10, sparse=ENCODER.encode_query("late homework"))
    assert [hit.document_id for hit in results.sparse] == ["doc-a"]
    assert results.dense == []


async def test_search_without_an_access_filter_is_an_error(small_store: VectorStore) -> None:
    dense = await load_corpus(small_store)
    with pytest.raises(AccessFilterRequired):
        await small_store.search(None, 10, dense=dense[0])  # type: ignore[arg-type]
    with pytest.raises(AccessFilterRequired):
        await small_store.search({"policies"}, 10, dense=dense[0])  # type: ignore[arg-type]
    for access in (None, {"policies"}):
        with pytest.raises(AccessFilterRequired):
            await small_store.search_ranked(access, 10, dense[0], ENCODER.encode_query("homework"),  # type: ignore[arg-type]
                                            lambda d, s: [*d, *s])


async def test_empty_access_set_returns_nothing_not_everything(small_store: VectorStore) -> None:
    dense = await load_corpus(small_store)
    results = await small_store.search(
        AccessFilter(frozenset()), 10, dense=dense[0], sparse=ENCODER.encode_query("homework")
    )
    assert results.dense == [] and results.sparse == []


async def test_unknown_collection_returns_nothing(small_store: VectorStore) -> None:
    dense = await load_corpus(small_store)
    results = await small_store.search(AccessFilter(frozenset({"finance"})), 10, dense=dense[0])
    assert results.dense == []


async def test_excluded_documents_are_never_returned(small_store: VectorStore) -> None:
    dense = await load_corpus(small_store)
    access = AccessFilter(frozenset({"policies"}), excluded_document_ids=frozenset({"doc-a"}))
    results = await small_store.search(access, 10, dense=dense[0], sparse=ENCODER.encode_query("homework exams"))
    assert {hit.document_id for hit in results.dense} == {"doc-b"}
    assert {hit.document_id for hit in results.sparse} <= {"doc-b"}


async def test_delete_document_leaves_zero_and_keeps_the_rest(small_store: VectorStore) -> None:
    await load_corpus(small_store)
    await small_store.delete_document("doc-a")
    assert await small_store.count(document_id="doc-a") == 0
    assert await small_store.count() == 3


async def test_delete_collection_leaves_zero(small_store: VectorStore) -> None:
    await load_corpus(small_store)
    await small_store.delete_collection("policies")
    assert await small_store.count(collection_id="policies") == 0
    assert await small_store.count(collection_id="nursing") == 2


async def test_version_replace_keeps_the_current_version_only(small_store: VectorStore) -> None:
    old = [make_chunk("doc-a", "policies", 0, "Late work loses ten percent.", version=1)]
    new = [
        make_chunk("doc-a", "policies", 0, "Late work loses ten percent.", version=2),
        make_chunk("doc-a", "policies", 1, "Extensions need a form.", version=2),
    ]
    await load_corpus(small_store, old)
    await load_corpus(small_store, new)
    # Both versions coexist until the portal flips the current version, so searches never gap.
    assert await small_store.count(document_id="doc-a", document_version=1) == 1
    assert await small_store.count(document_id="doc-a", document_version=2) == 2
    await small_store.delete_document("doc-a", keep_version=2)
    assert await small_store.count(document_id="doc-a", document_version=1) == 0
    assert await small_store.count(document_id="doc-a", document_version=2) == 2
    await small_store.delete_document_version("doc-a", 2)
    assert await small_store.count() == 0


async def test_upsert_is_idempotent(small_store: VectorStore) -> None:
    await load_corpus(small_store)
    await load_corpus(small_store)
    assert await small_store.count() == 5


async def test_upsert_rejects_mismatched_vectors_and_writes_nothing(small_store: VectorStore) -> None:
    dense, sparse = vectors_for(CORPUS)
    with pytest.raises(ValueError, match="one dense and one sparse"):
        await small_store.upsert(CORPUS, dense[:2], sparse)
    with pytest.raises(ValueError, match="dimension 4"):
        await small_store.upsert(CORPUS, np.zeros((5, 3), dtype=np.float32), sparse)
    assert await small_store.count() == 0


async def test_delete_chunks_removes_exactly_those(small_store: VectorStore) -> None:
    await load_corpus(small_store)
    await small_store.delete_chunks(CORPUS[:2])
    assert await small_store.count() == 3
    assert await small_store.count(document_id="doc-a") == 0


@pytest.mark.parametrize("backend", ["edge", "qdrant-local"])
async def test_data_survives_reopening(backend: str, tmp_path: Path) -> None:
    store = await open_test_store(backend, tmp_path / "v", dim=4)
    await load_corpus(store)
    await store.close()
    reopened = await open_test_store(backend, tmp_path / "v", dim=4)
    try:
        assert await reopened.count(collection_id="policies") == 3
        dense, _ = vectors_for(CORPUS)
        results = await reopened.search(AccessFilter(frozenset({"policies"})), 1, dense=dense[2])
        assert results.dense[0].chunk_id == CORPUS[2].chunk_id
    finally:
        await reopened.close()


async def test_edge_search_after_index_build(tmp_path: Path) -> None:
    store = await open_test_store("edge", tmp_path / "v", dim=4)
    try:
        dense = await load_corpus(store)
        await store.optimize()
        results = await store.search(AccessFilter(frozenset({"nursing"})), 10, dense=dense[4])
        assert results.dense[0].chunk_id == CORPUS[4].chunk_id
    finally:
        await store.close()
