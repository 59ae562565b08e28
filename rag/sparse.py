"""BM25-style sparse vectors: the term-frequency half is computed here, the IDF half by Qdrant.

A document term gets ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``; a query term gets 1.
The collection's sparse vector is declared with Qdrant's IDF modifier, so the engine multiplies
each query term by its inverse document frequency over what is actually stored, and the dot
product is the BM25 score. ``avgdl`` is a fixed setting rather than a live statistic so that a
chunk's vector never changes after it is written.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass

from rag.types import SparseVector

# Unicode words, keeping inner apostrophes/hyphen-free; digits count as words (policy numbers).
_WORD = re.compile(r"\w+", re.UNICODE)

# A light list: articles, auxiliaries and pronouns that carry no topic. Deliberately short, so
# words such as "not", "late" or "after" that change a policy's meaning are kept.
STOP_WORDS = frozenset(
    """
    a an and are as at be been being but by can could did do does doing for from had has have
    having he her hers him his how i if in into is it its itself me my of on or our ours she
    should so than that the their theirs them then there these they this those to too was we
    were what when where which while who whom why will with would you your yours
    """.split()
)


def _light_stem(word: str) -> str:
    """Harman's S-stemmer: folds plurals only, cheap and predictable across domains."""
    if len(word) > 4 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [_light_stem(word) for word in _WORD.findall(folded) if word not in STOP_WORDS]


def term_index(term: str) -> int:
    # crc32 is stable across processes and versions (unlike hash()); 31 bits keeps it a
    # non-negative u32 for both Qdrant APIs.
    return zlib.crc32(term.encode("utf-8")) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Bm25Encoder:
    k1: float = 0.9
    b: float = 0.4
    avg_doc_tokens: float = 120.0

    def encode_document(self, text: str) -> SparseVector:
        counts = Counter(term_index(term) for term in tokenize(text))
        doc_len = sum(counts.values())
        if not counts:
            return SparseVector((), ())
        norm = self.k1 * (1.0 - self.b + self.b * doc_len / self.avg_doc_tokens)
        indices = sorted(counts)
        values = tuple(counts[i] * (self.k1 + 1.0) / (counts[i] + norm) for i in indices)
        return SparseVector(tuple(indices), values)

    def encode_query(self, text: str) -> SparseVector:
        # Each distinct query term once: repeated words in a question are not extra evidence.
        indices = sorted({term_index(term) for term in tokenize(text)})
        return SparseVector(tuple(indices), tuple(1.0 for _ in indices))
