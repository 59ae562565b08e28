"""Prompt budgeting: system + history + passages + answer fit the context window; least relevant passages and
oldest turns are dropped first."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rag.prompt import (
    MESSAGE_OVERHEAD_TOKENS,
    PromptTooLong,
    Turn,
    build_prompt,
    cited_numbers,
    format_source,
    load_template,
    texts_to_count_early,
)
from rag.types import SearchHit


async def count_words(texts: Sequence[str]) -> list[int]:
    """A deterministic tokenizer stand-in for the budgeting arithmetic: one token per word."""
    return [len(text.split()) for text in texts]


def hit(n: int, words: int, score: float) -> SearchHit:
    return SearchHit(f"c{n}", f"d{n}", "col", 1, n, score, " ".join([f"w{n}"] * words), f"Doc {n}", "", None)


async def test_everything_fits_when_the_window_is_large() -> None:
    hits = [hit(1, 50, 0.9), hit(2, 50, 0.8)]
    history = [Turn("user", "earlier question"), Turn("assistant", "earlier answer")]
    plan = await build_prompt("What now?", hits, history, count_words, context_window=4096, answer_tokens=256)
    assert plan.passages == hits and plan.dropped_passages == 0 and plan.dropped_turns == 0
    assert [m["role"] for m in plan.messages] == ["system", "user", "assistant", "user"]
    assert "[1] Doc 1" in plan.messages[-1]["content"] and "[2] Doc 2" in plan.messages[-1]["content"]
    assert plan.messages[-1]["content"].rstrip().endswith("Question: What now?")


async def test_least_relevant_passages_are_dropped_first() -> None:
    hits = [hit(1, 300, 0.9), hit(2, 300, 0.8), hit(3, 300, 0.7)]
    plan = await build_prompt("q?", hits, [], count_words, context_window=1000, answer_tokens=200)
    assert [h.chunk_id for h in plan.passages] == ["c1", "c2"]
    assert plan.dropped_passages == 1
    assert plan.prompt_tokens + 200 <= 1000


async def test_budget_never_exceeded_and_answer_room_kept() -> None:
    hits = [hit(n, 120, 1 - n / 10) for n in range(1, 9)]
    history = [Turn("user" if i % 2 == 0 else "assistant", " ".join(["h"] * 80)) for i in range(10)]
    plan = await build_prompt("q?", hits, history, count_words, context_window=1200, answer_tokens=300)
    system = load_template("grounded_system")
    total = sum(len(m["content"].split()) + MESSAGE_OVERHEAD_TOKENS for m in plan.messages)
    assert total + 300 <= 1200
    assert plan.prompt_tokens >= len(system.split())


async def test_oldest_turns_are_dropped_first_and_pairs_stay_together() -> None:
    history = []
    for i in range(6):
        history += [Turn("user", f"question {i} " + "x " * 60), Turn("assistant", f"answer {i} " + "y " * 60)]
    plan = await build_prompt("q?", [hit(1, 100, 0.9)], history, count_words, context_window=900, answer_tokens=200)
    kept = plan.history_used
    assert kept, "some recent history should fit"
    assert kept[-1].content.startswith("answer 5") and kept[0].role == "user"
    assert plan.dropped_turns == len(history) - len(kept) > 0
    assert plan.passages, "the passage is kept while old turns go"


async def test_question_too_long_for_the_window() -> None:
    with pytest.raises(PromptTooLong):
        await build_prompt(" ".join(["word"] * 2000), [], [], count_words, context_window=1000, answer_tokens=200)


def test_cited_numbers() -> None:
    assert cited_numbers("Wash hands [1]. Use rub [2, 3]; see [12].") == {1, 2, 3, 12}
    assert cited_numbers("no citations [a] here") == set()


async def test_the_early_count_covers_everything_but_the_passages() -> None:
    """The chat counts these while the passages are searched; the prompt must then need only the passages counted."""
    history = [Turn("user", "earlier question"), Turn("assistant", "earlier answer"), Turn("user", "lone turn")]
    early = set(texts_to_count_early("  What now?  ", history))
    counted: list[str] = []

    async def recording(texts: Sequence[str]) -> list[int]:
        counted.extend(texts)
        return await count_words(texts)

    hits = [hit(1, 40, 0.9), hit(2, 40, 0.8)]
    await build_prompt("  What now?  ", hits, history, recording, context_window=4096, answer_tokens=256)
    passages = {format_source(0, h) for h in hits}
    assert set(counted) - passages == early
    assert not early & passages
