"""Turn a question, the passages found and the conversation so far into chat messages that fit the context window.

Templates live in text files under rag/prompts/. The budget is counted in the model's own tokens:
system prompt + history + passages + the answer's maximum length never exceed the context window; the least
relevant passages and the oldest turns are dropped first.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal

from rag.llm import ChatMessage
from rag.types import SearchHit

TokenCounting = Callable[[Sequence[str]], Awaitable[list[int]]]

# Chat templates wrap each message in a few tokens of their own (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 8
SAFETY_MARGIN_TOKENS = 32
# History may first take this share of what is left after the question; passages then fill the rest,
# and anything still free goes back to older turns.
HISTORY_FIRST_SHARE = 0.25

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


@cache
def load_template(name: str) -> str:
    return resources.files("rag").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8").strip()


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class PromptPlan:
    messages: list[ChatMessage]
    passages: list[SearchHit]  # in the order numbered in the prompt: passages[0] is source [1]
    prompt_tokens: int
    dropped_passages: int = 0
    dropped_turns: int = 0
    history_used: list[Turn] = field(default_factory=list)


class PromptTooLong(ValueError):
    """The question alone does not fit the model's context window with room for an answer."""


def format_source(number: int, hit: SearchHit) -> str:
    where_parts = [part for part in (hit.section, f"page {hit.page}" if hit.page else "") if part]
    where = f" ({', '.join(where_parts)})" if where_parts else ""
    return load_template("source").format(number=number, title=hit.title or "Untitled", where=where, text=hit.text.strip())


def cited_numbers(answer: str) -> set[int]:
    """The source numbers an answer refers to as [n] or [n, m]."""
    numbers: set[int] = set()
    for match in _CITATION.finditer(answer):
        numbers.update(int(part) for part in match.group(1).split(","))
    return numbers


def _exchanges(history: Sequence[Turn]) -> list[list[Turn]]:
    """Group turns into question+answer exchanges, so a turn is never kept without its partner."""
    groups: list[list[Turn]] = []
    for turn in history:
        if turn.role == "user" or not groups:
            groups.append([turn])
        else:
            groups[-1].append(turn)
    return groups


def _frame_texts(question: str, history: Sequence[Turn], grounded: bool) -> tuple[list[str], list[list[Turn]]]:
    """What the budget counts besides the passages: system prompt, the user message around the question, and each
    exchange of history; and those exchanges."""
    system = load_template("grounded_system" if grounded else "general_system")
    shell = load_template("grounded_user" if grounded else "general_user").format(sources="", question=question.strip())
    exchanges = _exchanges(history)
    return [system, shell, *("\n".join(t.content for t in group) for group in exchanges)], exchanges


def texts_to_count_early(question: str, history: Sequence[Turn]) -> list[str]:
    """The texts `build_prompt` will count for a grounded answer, known before the passages are: count them while
    the passages are searched, and the prompt is then budgeted from a warm count cache."""
    return _frame_texts(question, history, grounded=True)[0]


async def build_prompt(
    question: str,
    hits: Sequence[SearchHit],
    history: Sequence[Turn],
    count_tokens: TokenCounting,
    *,
    context_window: int,
    answer_tokens: int,
    grounded: bool = True,
) -> PromptPlan:
    """Messages for one answer. `hits` are in relevance order (best first); `history` oldest first."""
    (system, shell, *exchange_texts), exchanges = _frame_texts(question, history, grounded)
    user_template = load_template("grounded_user" if grounded else "general_user")
    numbered = [format_source(0, hit) for hit in hits]  # the number's width barely matters for counting
    counts = await count_tokens([system, shell, *numbered, *exchange_texts])
    system_n, shell_n = counts[0], counts[1]
    passage_n = counts[2 : 2 + len(numbered)]
    exchange_n = [
        n + MESSAGE_OVERHEAD_TOKENS * len(group)
        for n, group in zip(counts[2 + len(numbered) :], exchanges, strict=True)
    ]

    budget = context_window - answer_tokens - SAFETY_MARGIN_TOKENS
    used = system_n + shell_n + 2 * MESSAGE_OVERHEAD_TOKENS
    if used > budget:
        raise PromptTooLong("the question is too long for the model; please shorten it")

    kept_exchanges: set[int] = set()

    def take_history(limit: int) -> int:
        spent = 0
        for index in range(len(exchanges) - 1, -1, -1):  # newest first
            if index in kept_exchanges:
                continue
            if spent + exchange_n[index] > limit:
                break  # keep history contiguous: never skip a turn to fit an older one
            kept_exchanges.add(index)
            spent += exchange_n[index]
        return spent

    used += take_history(int((budget - used) * HISTORY_FIRST_SHARE))
    kept_passages: list[int] = []
    for index, n in enumerate(passage_n):  # best first; a long passage that does not fit makes room for shorter ones
        if used + n + 2 <= budget:
            kept_passages.append(index)
            used += n + 2
    used += take_history(budget - used)

    passages = [hits[i] for i in kept_passages]
    sources = "\n\n".join(format_source(number, hit) for number, hit in enumerate(passages, start=1))
    kept_history = [turn for i in sorted(kept_exchanges) for turn in exchanges[i]]
    messages: list[ChatMessage] = [{"role": "system", "content": system}]
    messages.extend({"role": turn.role, "content": turn.content} for turn in kept_history)
    messages.append({"role": "user", "content": user_template.format(sources=sources, question=question.strip())})
    return PromptPlan(
        messages=messages,
        passages=passages,
        prompt_tokens=used,
        dropped_passages=len(hits) - len(passages),
        dropped_turns=len(history) - len(kept_history),
        history_used=kept_history,
    )
