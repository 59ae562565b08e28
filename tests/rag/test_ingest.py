"""Ingest end to end (real parser, model and store): progress, replace, and all-or-nothing on failure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from rag.embed import Embedder
from rag.errors import DocumentRejected, StoreError
from rag.ingest import index_document
from rag.store import VectorStore
from rag.types import Chunk, ParseLimits, SparseVector
from tests.rag.documents import encrypt_pdf, make_docx, make_many_entry_zip, make_pdf, make_zip_bomb

HANDBOOK = make_docx(
    "Ward Handbook",
    [
        ("Handover", ["Shift handover happens at seven in the morning and seven at night."] * 3),
        ("Medication", ["Controlled drugs are checked by two nurses at every round."] * 3),
    ],
)
PDF = make_pdf([["Visiting hours are from two until eight."], ["Children must be accompanied."]], title="Visitors")

BAD_INPUTS = {
    "encrypted.pdf": encrypt_pdf(PDF, "secret"),
    "truncated.pdf": PDF[: len(PDF) // 2],
    "malformed.pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage\ntrailer <<>>\n%%EOF\n",
    "bomb.docx": make_zip_bomb(8 * 1024 * 1024),
    "entries.docx": make_many_entry_zip(60),
    "empty.txt": b"",
    "binary.txt": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16,
    "oversize.txt": b"plain words " * 200,
}
# Small caps so the bombs stay small; the default caps are tested in test_parse.py.
TEST_LIMITS = ParseLimits(max_file_bytes=2_000, max_uncompressed_bytes=4 * 1024 * 1024, max_zip_entries=50)


async def snapshot(store: VectorStore) -> tuple[int, set[str]]:
    return await store.count(), await store.chunk_ids("existing")


async def test_index_document_end_to_end_with_progress(model_store: VectorStore, embedder: Embedder) -> None:
    stages: list[tuple[str, float]] = []
    result = await index_document(
        HANDBOOK, "handbook.docx", "hb", "nursing", 1, embedder, model_store,
        progress=lambda stage, fraction: stages.append((stage, fraction)),
    )
    assert result.title == "Ward Handbook" and result.chunk_count >= 2
    assert await model_store.count(document_id="hb") == result.chunk_count
    assert await model_store.count(collection_id="nursing") == result.chunk_count
    names = [stage for stage, _ in stages]
    assert names[0] == "parsing" and names[-1] == "done" and "embedding" in names and "storing" in names
    fractions = [fraction for _, fraction in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


async def test_reindexing_unchanged_document_changes_nothing(model_store: VectorStore, embedder: Embedder) -> None:
    await index_document(HANDBOOK, "h.docx", "hb", "nursing", 1, embedder, model_store)
    before = await model_store.chunk_ids("hb")
    await index_document(HANDBOOK, "h.docx", "hb", "nursing", 1, embedder, model_store)
    assert await model_store.chunk_ids("hb") == before
    assert await model_store.count(document_id="hb") == len(before)


async def test_new_version_then_drop_old_leaves_only_the_new(model_store: VectorStore, embedder: Embedder) -> None:
    first = await index_document(HANDBOOK, "h.docx", "hb", "nursing", 1, embedder, model_store)
    second = await index_document(PDF, "h.pdf", "hb", "nursing", 2, embedder, model_store)
    assert await model_store.count(document_id="hb") == first.chunk_count + second.chunk_count
    await model_store.delete_document("hb", keep_version=2)
    assert await model_store.count(document_id="hb", document_version=1) == 0
    assert await model_store.count(document_id="hb", document_version=2) == second.chunk_count


@pytest.mark.parametrize("filename", sorted(BAD_INPUTS))
async def test_bad_input_is_rejected_and_the_store_is_unchanged(
    filename: str, model_store: VectorStore, embedder: Embedder
) -> None:
    await index_document(b"Existing policy text.", "existing.txt", "existing", "c", 1, embedder, model_store)
    before = await snapshot(model_store)
    with pytest.raises(DocumentRejected) as info:
        await index_document(
            BAD_INPUTS[filename], filename, "new-doc", "c", 1, embedder, model_store, limits=TEST_LIMITS
        )
    assert info.value.filename == filename and info.value.reason
    assert await snapshot(model_store) == before
    assert await model_store.count(document_id="new-doc") == 0


class FailingAfterFirstWrite:
    """Fault injection around a real store: the first upsert call writes half, then the disk 'fails'."""

    def __init__(self, inner: VectorStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def upsert(self, chunks: Sequence[Chunk], dense: np.ndarray, sparse: Sequence[SparseVector]) -> None:
        half = max(1, len(chunks) // 2)
        await self.inner.upsert(chunks[:half], dense[:half], sparse[:half])
        raise StoreError("disk full")


async def test_failure_while_storing_leaves_no_half_indexed_document(
    model_store: VectorStore, embedder: Embedder
) -> None:
    first = await index_document(HANDBOOK, "h.docx", "hb", "nursing", 1, embedder, model_store)
    before = await model_store.chunk_ids("hb")
    failing = FailingAfterFirstWrite(model_store)
    with pytest.raises(StoreError):
        await index_document(PDF, "h.pdf", "hb", "nursing", 2, embedder, failing)  # type: ignore[arg-type]
    assert await model_store.count(document_id="hb", document_version=2) == 0
    assert await model_store.chunk_ids("hb") == before
    # A failed re-index of the same version must not delete the chunks that were already there.
    with pytest.raises(StoreError):
        await index_document(HANDBOOK, "h.docx", "hb", "nursing", 1, embedder, failing)  # type: ignore[arg-type]
    assert await model_store.count(document_id="hb") == first.chunk_count
