"""Split a parsed document into passages bounded by the embedding model's own token count.

Sections first (a chunk never spans two headings), then paragraphs, then sentences, then words:
the largest unit that fits is kept whole. A little overlap (whole sentences) carries context from
one chunk into the next inside a section. Chunk ids are ``document id : ordinal : content hash``,
so re-chunking an unchanged document yields the same ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.types import Chunk, ParsedBlock, ParsedDocument

TokenCounter = Callable[[str], int]

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")


@dataclass(frozen=True, slots=True)
class _Section:
    heading_path: tuple[str, ...]
    blocks: tuple[ParsedBlock, ...]


@dataclass(slots=True)
class _Piece:
    text: str
    tokens: int
    page: int | None
    block: int = -1  # index of the block it came from: pieces of one block join with a space


def embedding_text(title: str, section: str, text: str) -> str:
    """What the model embeds for a chunk: its title and section give a bare paragraph its topic."""
    header = " > ".join(part for part in (title, section) if part)
    return f"{header}\n{text}" if header else text


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_chunk_id(document_id: str, ordinal: int, text_hash: str) -> str:
    return f"{document_id}:{ordinal}:{text_hash}"


def _sections(blocks: tuple[ParsedBlock, ...]) -> list[_Section]:
    sections: list[_Section] = []
    current: list[ParsedBlock] = []
    path: tuple[str, ...] = ()
    for block in blocks:
        if block.is_heading or block.heading_path != path:
            if current:
                sections.append(_Section(path, tuple(current)))
            current = []
            path = block.heading_path
        if not block.is_heading:
            current.append(block)
    if current:
        sections.append(_Section(path, tuple(current)))
    return sections


def _split_oversized(text: str, page: int | None, count: TokenCounter, limit: int) -> list[_Piece]:
    """Break a paragraph that does not fit: by sentences, and a sentence that does not fit by words."""
    pieces: list[_Piece] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        tokens = count(sentence)
        if tokens <= limit:
            pieces.append(_Piece(sentence, tokens, page))
            continue
        words = sentence.split()
        start = 0
        while start < len(words):
            # The longest window of words that fits, by binary search: every word is at least one
            # token, so a window never holds more than ``limit`` words.
            low, high = start, min(len(words), start + limit)
            while low < high:
                middle = (low + high + 1) // 2
                if count(" ".join(words[start:middle])) <= limit:
                    low = middle
                else:
                    high = middle - 1
            if low == start:
                # A single "word" longer than the limit (a URL, a hash): cut it by characters.
                word = words[start]
                cut = max(1, len(word) * limit // max(count(word), 1))
                words[start : start + 1] = [word[:cut], word[cut:]]
                continue
            window = " ".join(words[start:low])
            pieces.append(_Piece(window, count(window), page))
            start = low
    return pieces


def _overlap_tail(pieces: list[_Piece], overlap_tokens: int, count: TokenCounter) -> list[_Piece]:
    """The last sentences of a chunk, up to ``overlap_tokens``, to open the next one."""
    if overlap_tokens <= 0 or not pieces:
        return []
    sentences = [s.strip() for s in _SENTENCE_END.split(pieces[-1].text) if s.strip()]
    tail: list[str] = []
    total = 0
    for sentence in reversed(sentences):
        tokens = count(sentence)
        if total + tokens > overlap_tokens:
            break
        tail.insert(0, sentence)
        total += tokens
    # Overlap that would repeat the whole chunk would never move forward.
    if not tail or total >= sum(piece.tokens for piece in pieces):
        return []
    return [_Piece(" ".join(tail), total, pieces[-1].page, pieces[-1].block)]


def chunk_document(
    parsed: ParsedDocument,
    document_id: str,
    collection_id: str,
    document_version: int,
    tokenizer_counter: TokenCounter,
    max_tokens: int,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Chunks whose embedding text (title, section and body) is at most ``max_tokens`` tokens."""
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    overlap_tokens = min(overlap_tokens, max_tokens // 4)
    chunks: list[Chunk] = []

    def emit(section: str, pieces: list[_Piece]) -> None:
        parts: list[str] = []
        for index, piece in enumerate(pieces):
            if index:
                parts.append(" " if piece.block == pieces[index - 1].block else "\n\n")
            parts.append(piece.text)
        text = "".join(parts)
        full = embedding_text(parsed.title, section, text)
        text_hash = content_hash(full)
        ordinal = len(chunks)
        chunks.append(
            Chunk(
                chunk_id=make_chunk_id(document_id, ordinal, text_hash),
                document_id=document_id,
                collection_id=collection_id,
                document_version=document_version,
                ordinal=ordinal,
                text=text,
                title=parsed.title,
                section=section,
                page=pieces[0].page,
                token_count=tokenizer_counter(full),
                content_hash=text_hash,
            )
        )

    for section in _sections(parsed.blocks):
        section_name = " > ".join(section.heading_path)
        # Room left for the body once the title and section line are paid for (plus a margin for
        # the joins, which the final count below verifies).
        header_tokens = tokenizer_counter(embedding_text(parsed.title, section_name, "")) if (
            parsed.title or section_name
        ) else 0
        budget = max(16, max_tokens - header_tokens - 2)
        pieces: list[_Piece] = []
        for block_index, block in enumerate(section.blocks):
            tokens = tokenizer_counter(block.text)
            if tokens <= budget:
                pieces.append(_Piece(block.text, tokens, block.page, block_index))
                continue
            for piece in _split_oversized(block.text, block.page, tokenizer_counter, budget):
                piece.block = block_index
                pieces.append(piece)
        current: list[_Piece] = []
        used = 0
        fresh = 0  # pieces in ``current`` that are not overlap from the previous chunk
        for piece in pieces:
            if current and used + piece.tokens > budget:
                emit(section_name, current)
                current = _overlap_tail(current, overlap_tokens, tokenizer_counter)
                used = sum(p.tokens for p in current)
                fresh = 0
                if used + piece.tokens > budget:
                    current, used = [], 0
            current.append(piece)
            used += piece.tokens
            fresh += 1
        if current and fresh:
            emit(section_name, current)
    return chunks
