"""Chunking: bounded by the model's own tokenizer, structure-aware, stable ids, a little overlap."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rag.chunk import chunk_document, embedding_text
from rag.embed import Embedder
from rag.types import ParsedBlock, ParsedDocument

SENTENCES = [f"Rule {i} says that students must sign in at the front desk before {i} o'clock." for i in range(60)]


def handbook(extra: str = "") -> ParsedDocument:
    return ParsedDocument(
        title="School Handbook",
        mime_type="text/markdown",
        blocks=(
            ParsedBlock("Attendance", ("Attendance",), page=1, is_heading=True),
            ParsedBlock(" ".join(SENTENCES[:30]), ("Attendance",), page=1),
            ParsedBlock(" ".join(SENTENCES[30:]) + extra, ("Attendance",), page=2),
            ParsedBlock("Uniform", ("Uniform",), page=3, is_heading=True),
            ParsedBlock("Blazers are worn in winter.", ("Uniform",), page=3),
        ),
    )


def chunks_of(parsed: ParsedDocument, embedder: Embedder, max_tokens: int = 96, overlap: int = 24) -> list:
    return chunk_document(parsed, "doc-1", "coll-1", 3, embedder.count_tokens, max_tokens, overlap)


def test_every_chunk_fits_the_model_and_carries_its_metadata(embedder: Embedder) -> None:
    chunks = chunks_of(handbook(), embedder)
    assert len(chunks) > 4
    for ordinal, chunk in enumerate(chunks):
        full = embedding_text(chunk.title, chunk.section, chunk.text)
        assert chunk.token_count == embedder.count_tokens(full) <= 96
        assert (chunk.document_id, chunk.collection_id, chunk.document_version) == ("doc-1", "coll-1", 3)
        assert chunk.ordinal == ordinal
        assert chunk.chunk_id == f"doc-1:{ordinal}:{chunk.content_hash}"
    # Whole sentences are kept: no chunk starts or ends inside one.
    for chunk in chunks[:-1]:
        assert chunk.text.rstrip().endswith((".", "o'clock."))


def test_chunks_never_span_two_sections_and_keep_pages(embedder: Embedder) -> None:
    chunks = chunks_of(handbook(), embedder)
    uniform = [chunk for chunk in chunks if chunk.section == "Uniform"]
    assert len(uniform) == 1 and uniform[0].text == "Blazers are worn in winter." and uniform[0].page == 3
    assert all("Blazers" not in chunk.text for chunk in chunks if chunk.section == "Attendance")
    assert {chunk.page for chunk in chunks if chunk.section == "Attendance"} == {1, 2}


def test_consecutive_chunks_overlap_by_whole_sentences(embedder: Embedder) -> None:
    chunks = [chunk for chunk in chunks_of(handbook(), embedder) if chunk.section == "Attendance"]
    for previous, following in zip(chunks, chunks[1:], strict=False):
        last_sentence = previous.text.split(". ")[-1].strip()
        assert following.text.startswith(last_sentence.rstrip(".")), "the next chunk should open with overlap"


def test_no_overlap_when_disabled(embedder: Embedder) -> None:
    chunks = chunks_of(handbook(), embedder, overlap=0)
    attendance = " ".join(chunk.text for chunk in chunks if chunk.section == "Attendance")
    assert attendance.count("Rule 5 says") == 1


def test_ids_are_stable_and_a_change_touches_only_its_chunks(embedder: Embedder) -> None:
    first = chunks_of(handbook(), embedder)
    again = chunks_of(handbook(), embedder)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    changed = chunks_of(handbook(extra=" A new rule about phones."), embedder)
    unchanged_ids = {c.chunk_id for c in first} & {c.chunk_id for c in changed}
    # Chunks before the edit keep their ids; the edited tail gets new ones.
    assert first[0].chunk_id in unchanged_ids
    assert any(c.chunk_id not in unchanged_ids for c in changed)


def test_an_overlong_sentence_is_split_by_words(embedder: Embedder) -> None:
    parsed = ParsedDocument(
        "Log", "text/plain", (ParsedBlock(" ".join(f"entry{i}" for i in range(400))),)
    )
    chunks = chunks_of(parsed, embedder, max_tokens=64, overlap=0)
    assert len(chunks) > 3
    assert all(chunk.token_count <= 64 for chunk in chunks)
    assert " ".join(chunk.text for chunk in chunks).split() == [f"entry{i}" for i in range(400)]


def test_a_giant_word_is_cut_rather_than_truncated_by_the_model(embedder: Embedder) -> None:
    parsed = ParsedDocument("Blob", "text/plain", (ParsedBlock("x" * 5000),))
    chunks = chunks_of(parsed, embedder, max_tokens=64, overlap=0)
    assert all(chunk.token_count <= 64 for chunk in chunks)
    assert "".join(chunk.text.replace(" ", "") for chunk in chunks) == "x" * 5000


def test_max_tokens_must_leave_room(embedder: Embedder) -> None:
    with pytest.raises(ValueError):
        chunks_of(replace(handbook()), embedder, max_tokens=4)
