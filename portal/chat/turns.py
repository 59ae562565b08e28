"""Running one turn: retrieve what the person may read, budget the prompt, stream the model, save the outcome.

Faults lose nothing: the question is already saved; a vector store or model failure ends the turn as `failed`
with a plain notice (and the passages, when retrieval worked); Stop or a lost reader ends it as `incomplete`
with what arrived. No transaction is held while waiting on the embedder or the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from portal.audit import AuditContext, append_audit_sync
from portal.chat.policy import ChatPolicy
from portal.chat.shared_state import SharedState
from portal.chat.views import AnswerView, SourceView, excerpt_of, where_text
from portal.db.engine import run_unit
from portal.db.tables import CITATIONS, CONVERSATIONS, DOCUMENTS, MESSAGES
from portal.logging import get_logger
from portal.metrics import LLM_TOKENS, RETRIEVAL_LATENCY, TIME_TO_FIRST_TOKEN, TOKENS_PER_SECOND
from portal.principal import Principal
from portal.runtime import Runtime
from rag.embed import Vectors
from rag.llm import LLMClient, LLMError, LLMTimeout, StreamUsage
from rag.prompt import PromptPlan, PromptTooLong, Turn, build_prompt, cited_numbers, texts_to_count_early
from rag.retrieve import Retriever
from rag.types import AccessFilter, SearchHit

log = get_logger(__name__)
T = TypeVar("T")
# Built once, on table columns (see portal.db.tables).
_CURRENT_VERSIONS = (select(DOCUMENTS.c.id, DOCUMENTS.c.version)
                     .where(DOCUMENTS.c.id.in_(bindparam("version_document_ids", expanding=True))))
# The answer's save: the columns set come from the execution's parameters (content, status, error, model, token
# counts, finished_at), the row from the bound id.
_SAVE_ANSWER = update(MESSAGES).where(MESSAGES.c.id == bindparam("saved_answer_id"))
_INSERT_CITATIONS = insert(CITATIONS)
_TOUCH_CONVERSATION = update(CONVERSATIONS).where(CONVERSATIONS.c.id == bindparam("touched_conversation_id"))

NO_PASSAGES = (
    "I could not find anything about this in the documents you have access to, so I have not asked the model. "
    "Try other words, or ask whoever manages your documents whether the one you need has been added."
)
STORE_DOWN = (
    "The document search is not available right now, so this question could not be answered. "
    "Your question is saved: use Retry in a moment."
)
LLM_DOWN = (
    "The language model is not answering right now, so there is no written answer. "
    "The passages found for your question are listed below; use Retry to ask the model again."
)
LLM_SLOW = (
    "The language model took too long to answer. "
    "The passages found for your question are listed below; use Retry to ask the model again."
)
EMBEDDER_WAIT_S = 30.0
LIVE_MIN_TTL_S = 10.0
INTERRUPTED = (
    "The portal stopped while writing this answer (a restart or a fault), so it was not finished. "
    "Your question is saved: use Retry to ask again."
)


def live_key(answer_id: str) -> str:
    """Shared-state key that exists while some process is writing this answer; a process that dies stops renewing
    it, and the next look at the answer marks it interrupted instead of 'still being written' forever."""
    return f"chat:live:{answer_id}"


@dataclass(frozen=True)
class TokenEvent:
    text: str


@dataclass(frozen=True)
class SourcesEvent:
    sources: list[SourceView]


@dataclass(frozen=True)
class DoneEvent:
    answer: AnswerView


ChatEvent = TokenEvent | SourcesEvent | DoneEvent


@dataclass(frozen=True)
class FoundPassages:
    """What a search found, as the vector store holds it, and the check that keeps only current document versions (a
    document being replaced has two versions in the store for a moment). The check is a database read started with
    the search's result: the model may be asked meanwhile, but nothing is shown or saved before the check is done."""

    hits: list[SearchHit]
    current: asyncio.Task[list[SearchHit]]


class VersionCheckFailed(Exception):
    """The database could not say which document versions are current: the passages cannot be trusted."""


@dataclass
class TurnInput:
    answer_id: str
    principal: Principal
    question: str
    history: list[Turn]
    policy: ChatPolicy
    access: AccessFilter
    context: AuditContext
    ephemeral: bool
    conversation_id: str | None = None
    # Passages already found for this turn (see PreparedTurn); None: the turn searches for them itself.
    found: FoundPassages | None = None
    # The claim of this answer while it is still being made (the fast way: the model is asked while the claim's
    # UPDATE runs). The turn shows, saves and registers nothing before the claim is won (then None); a lost claim
    # raises ClaimLost.
    claim: asyncio.Task[bool] | None = None
    # The model's answer begun when the question was saved (see EarlyAnswer); None: the turn asks the model itself.
    early: EarlyAnswer | None = None


class ClaimLost(Exception):
    """Another stream claimed this answer first: this one asked the model early, stopped, and saved nothing."""


@dataclass
class TurnOutcome:
    status: str = "complete"
    content: str = ""
    error: str | None = None
    model: str | None = None
    plan: PromptPlan | None = None
    hits: list[SearchHit] = field(default_factory=list)
    usage: StreamUsage = field(default_factory=StreamUsage)


def _sources(passages: list[SearchHit], cited: set[int]) -> list[SourceView]:
    return [
        SourceView(number=n, chunk_id=hit.chunk_id, document_id=hit.document_id, title=hit.title or "Untitled document",
                   where=where_text(hit.section, hit.page), excerpt=excerpt_of(hit.text), cited=n in cited)
        for n, hit in enumerate(passages, start=1)
    ]


class EarlyAnswer:
    """An answer begun by the process that saved its question, before any stream has claimed it: the turn's
    generation (passages already found, prompt, model) runs in a task and its pieces wait here for the stream that
    takes it. A real model's time to first token then overlaps the page's round trip to open the stream.

    Taken at most once, within `wait_s` of its start; otherwise it is cancelled, which closes the model request (a
    stream served by another process, or opened late, asks the model itself). Nothing is shown or saved from here:
    the stream that takes it does both, after winning the answer's claim."""

    def __init__(self) -> None:
        self.outcome = TurnOutcome()
        self.stop = asyncio.Event()  # the turn's Stop flag, registered by the stream that takes it
        self._pieces: asyncio.Queue[str | None] = asyncio.Queue()  # None: generation ended
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._taken = False

    def start(self, generation: AsyncGenerator[str, None], wait_s: float, when_done: Callable[[], None]) -> None:
        """Run `generation` until it ends or this answer is abandoned; `when_done` is called once it is over."""

        async def produce() -> None:
            try:
                async with contextlib.aclosing(generation) as pieces:
                    async for piece in pieces:
                        self._pieces.put_nowait(piece)
            finally:
                self._pieces.put_nowait(None)

        self._task = asyncio.create_task(produce(), name="chat-answer-early")
        self._task.add_done_callback(consume_exception)
        self._task.add_done_callback(lambda _task: when_done())
        self._expiry = asyncio.get_running_loop().call_later(wait_s, self.abandon)

    @property
    def cancelled(self) -> bool:
        return self._task is not None and self._task.cancelled()

    def take(self) -> bool:
        """True once, for the stream that takes this answer in time; False when it was taken or abandoned."""
        if self._taken or self._task is None or self._task.cancelled():
            return False
        self._taken = True
        if self._expiry is not None:
            self._expiry.cancel()
        return True

    def abandon(self) -> None:
        """Cancel the generation (closing the model request) unless a stream has taken it."""
        if self._taken:
            return
        self._taken = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self._task is not None:
            self._task.cancel()

    async def pieces(self) -> AsyncGenerator[str, None]:
        """The pieces as they arrive, for the stream that took this answer; the generation's error, if any."""
        while (piece := await self._pieces.get()) is not None:
            yield piece
        assert self._task is not None
        if not self._task.cancelled() and (error := self._task.exception()) is not None:
            raise error

    async def halt(self) -> None:
        """End the generation now (the reader left, or the claim was lost) and wait until `outcome` holds what
        arrived."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])


@dataclass(frozen=True)
class PreparedTurn:
    """What an answer needs before the model is called (history, policy, access filter, passages), worked out by
    the process that saved the question while the page opens the answer's stream. Used only by a stream of the same
    person, with the same roles, served by the same process; anything else works the turn out afresh."""

    user_id: str
    roles: frozenset[str]
    question: str
    history: list[Turn]
    policy: ChatPolicy
    access: AccessFilter
    conversation_id: str
    found: FoundPassages | None  # None: the search failed here; the stream searches again and reports a failure
    early: EarlyAnswer | None = None  # the answer begun already (see EarlyAnswer)

    def fits(self, principal: Principal) -> bool:
        return principal.user_id == self.user_id and principal.roles == self.roles


class HeadStarts(Generic[T]):
    """Work started early in this process (a question's embedding, an answer's preparation), taken once by the
    step that needs it moments later. Only a head start: another process, or this one after `max_age_s`, does the
    work itself, so nothing depends on what is here. At most `limit` are kept; unclaimed ones are dropped."""

    def __init__(self, limit: int = 256, max_age_s: float = 60.0) -> None:
        self._limit, self._max_age_s = limit, max_age_s
        self._pending: dict[str, tuple[float, asyncio.Task[T]]] = {}

    def start(self, key: str, work: Coroutine[Any, Any, T], name: str) -> None:
        """Start `work` under `key`; a key already in flight keeps its first work (the new one is not run)."""
        now = time.monotonic()
        for old in [k for k, (at, _t) in self._pending.items() if now - at > self._max_age_s]:
            self.drop(old)
        if key in self._pending:
            work.close()
            return
        while len(self._pending) >= self._limit:
            self.drop(next(iter(self._pending)))
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(consume_exception)
        self._pending[key] = (now, task)

    def peek(self, key: str) -> asyncio.Task[T] | None:
        entry = self._pending.get(key)
        return entry[1] if entry is not None else None

    def take(self, key: str) -> asyncio.Task[T] | None:
        """The work started under `key`, once; None when none was started here or it is too old to trust."""
        entry = self._pending.pop(key, None)
        if entry is None or time.monotonic() - entry[0] > self._max_age_s:
            if entry is not None:
                entry[1].cancel()
            return None
        return entry[1]

    def drop(self, key: str) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            entry[1].cancel()

    def clear(self) -> None:
        for key in list(self._pending):
            self.drop(key)

    def __len__(self) -> int:
        return len(self._pending)


async def _result_or_none(task: asyncio.Task[T] | None) -> T | None:
    """A head start's result; None when there was none or it failed (the caller then does the work itself)."""
    if task is None:
        return None
    try:
        return await task
    except Exception:  # noqa: BLE001
        return None


def consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here so an unclaimed failure is not reported as never retrieved


class TurnRunner:
    def __init__(self, runtime: Runtime, llm: LLMClient, state: SharedState) -> None:
        self.runtime, self.llm, self.state = runtime, llm, state
        self._stops: dict[str, asyncio.Event] = {}
        self._watcher: asyncio.Task[None] | None = None
        # Question embeddings, keyed by the question's text (the vector depends on nothing else).
        self._early_vectors: HeadStarts[Vectors] = HeadStarts()
        # Answers' preparations, by answer id (see PreparedTurn).
        self.prepared: HeadStarts[PreparedTurn] = HeadStarts(max_age_s=10.0)
        self._beaten: dict[str, float] = {}  # answer id -> when its heartbeat was last written (monotonic)
        self._early: set[EarlyAnswer] = set()  # answers begun here and not yet finished

    def embed_early(self, question: str) -> None:
        """Start embedding a question as soon as it arrives, while it is saved and the page opens its stream."""
        embedder = self.runtime.embedder
        if embedder is not None:
            self._early_vectors.start(question, embedder.aembed_query(question), name="chat-embed-early")

    def drop_early(self, question: str) -> None:
        self._early_vectors.drop(question)

    def local_stop(self, answer_id: str, event: asyncio.Event | None = None) -> asyncio.Event:
        """The Stop flag of an answer streamed here (`event` when given and none is registered yet)."""
        event = self._stops.setdefault(answer_id, event or asyncio.Event())
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_stop_requests(), name="chat-stop-watcher")
        return event

    def begin(self, turn: TurnInput, wait_s: float) -> EarlyAnswer:
        """Begin a turn's answer before its stream opens (see EarlyAnswer). As in a stream, the model is asked while
        the passages' version check runs, and no token is passed on before the check is done."""
        early = EarlyAnswer()
        self._early.add(early)
        early.start(self._generate(turn, early.stop, early.outcome), wait_s, lambda: self._early.discard(early))
        return early

    async def close(self) -> None:
        self._early_vectors.clear()
        self.prepared.clear()
        for early in list(self._early):
            early.abandon()
            await early.halt()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher

    async def _watch_stop_requests(self) -> None:
        """Stop may be pressed on another process: one query per interval covers every stream this process serves."""
        interval = self.runtime.settings.chat_stream_sync_s
        while self._stops:
            await asyncio.sleep(interval)
            waiting = [answer_id for answer_id, event in self._stops.items() if not event.is_set()]
            try:
                requested = await self.state.present([f"chat:stop:{answer_id}" for answer_id in waiting])
            except Exception as exc:  # noqa: BLE001 - a lost check is retried next interval
                log.warning("chat_stop_check_failed", error=type(exc).__name__)
                continue
            for answer_id in waiting:
                if f"chat:stop:{answer_id}" in requested and answer_id in self._stops:
                    self._stops[answer_id].set()
            # A heartbeat lasts `live_ttl`: renew each one when a third of it is gone, not at every check. With the
            # database holding shared state that is one write of every live answer's row, under SQLite's one lock.
            renew_after = self.live_ttl.total_seconds() / 3
            now = time.monotonic()
            due = [a for a in self._stops if now - self._beaten.get(a, float("-inf")) >= renew_after]
            if due:
                await self.beat(due)

    async def beat(self, answer_ids: list[str]) -> None:
        """Tell every process these answers are being written here (see `live_key`): a missed beat is retried."""
        try:
            await self.state.put_many([live_key(a) for a in answer_ids], b"1", self.live_ttl)
        except Exception as exc:  # noqa: BLE001
            log.warning("chat_heartbeat_failed", error=type(exc).__name__)
            return
        self.beaten(answer_ids)

    def beaten(self, answer_ids: list[str]) -> None:
        """Note heartbeats written now (also by a claim that wrote the first one in its own unit of work)."""
        now = time.monotonic()
        for answer_id in answer_ids:
            self._beaten[answer_id] = now

    @property
    def live_ttl(self) -> timedelta:
        return timedelta(seconds=max(LIVE_MIN_TTL_S, 5 * self.runtime.settings.chat_stream_sync_s))

    def signal_stop_here(self, answer_id: str) -> None:
        if answer_id in self._stops:
            self._stops[answer_id].set()

    async def run(self, turn: TurnInput, stop: asyncio.Event) -> AsyncGenerator[ChatEvent, None]:
        """The events of a turn (its generation begun here, or taken over from `turn.early`, whose Stop flag `stop`
        then is)."""
        early = turn.early
        outcome = early.outcome if early is not None else TurnOutcome()
        generation = early.pieces() if early is not None else self._generate(turn, stop, outcome)
        try:
            try:
                async with contextlib.aclosing(generation) as tokens:
                    async for token in tokens:
                        await self._own(turn, stop)  # at once after the first token: the claim is then done
                        yield TokenEvent(token)
            except (asyncio.CancelledError, GeneratorExit):
                # The request running this turn was cut off: keep what arrived, even while being cancelled (if this
                # stream owns the answer).
                if early is not None:
                    await asyncio.shield(early.halt())
                outcome.status = "incomplete"
                if turn.claim is not None and await asyncio.shield(turn.claim):
                    turn.claim = None
                if turn.claim is None:
                    await asyncio.shield(self._save(turn, outcome))
                raise
            await self._own(turn, stop)
            view = await self._save(turn, outcome)
            yield SourcesEvent(view.sources)
            yield DoneEvent(view)
        finally:
            if early is not None:
                await early.halt()  # a lost claim or a fault: the model request is not left running
            if turn.claim is None:  # only the stream that owns the answer holds its flags here
                self._stops.pop(turn.answer_id, None)
                self._beaten.pop(turn.answer_id, None)

    async def _own(self, turn: TurnInput, stop: asyncio.Event) -> None:
        """Wait for the turn's claim when it is still being made. Won: this stream's Stop flag is registered (only
        the stream that owns an answer registers one: a losing stream's end must not stop the winner's answer).
        Lost: ClaimLost."""
        if turn.claim is None:
            return
        if not await turn.claim:
            raise ClaimLost(turn.answer_id)
        turn.claim = None
        self.local_stop(turn.answer_id, stop)

    async def search_passages(self, question: str, access: AccessFilter) -> FoundPassages:
        """The passages for a question, limited to `access`, with their version check started (see FoundPassages).
        Raises when the store or the embedder fails."""
        started = time.monotonic()
        hits = await self._retrieve(question, access)
        RETRIEVAL_LATENCY.observe(time.monotonic() - started)
        current = asyncio.create_task(self._current_only(hits), name="chat-passage-versions")
        current.add_done_callback(consume_exception)
        return FoundPassages(hits, current)

    async def _retrieve(self, question: str, access: AccessFilter) -> list[SearchHit]:
        runtime = self.runtime
        if runtime.store is None:
            raise ConnectionError("vector store not open")
        embedder = await runtime.wait_for_embedder(timeout=EMBEDDER_WAIT_S)
        vector = await _result_or_none(self._early_vectors.take(question))
        return await Retriever(embedder, runtime.store).search(
            question, access, top_k=runtime.settings.chat_top_k, query_vector=vector
        )

    async def _current_only(self, hits: list[SearchHit]) -> list[SearchHit]:
        """`hits` less those of a document version that is not (or no longer) the current one."""
        if not hits:
            return hits
        document_ids = {h.document_id for h in hits}

        def current_versions(session: Session) -> dict[str, int]:
            rows = session.execute(_CURRENT_VERSIONS, {"version_document_ids": sorted(document_ids)})
            return {row.id: row.version for row in rows.all()}

        try:
            versions = await run_unit(self.runtime.db, current_versions, write=False)
        except Exception as exc:
            raise VersionCheckFailed(type(exc).__name__) from exc
        return [hit for hit in hits if versions.get(hit.document_id) == hit.document_version]

    @staticmethod
    async def _checked(found: FoundPassages, outcome: TurnOutcome) -> bool:
        """Apply the version check to `outcome`: True when a passage in its prompt was not current (the prompt must
        then be built again). Raises VersionCheckFailed."""
        outcome.hits = await found.current
        if outcome.plan is None:
            return False
        kept = {(h.chunk_id, h.document_version) for h in outcome.hits}
        return any((p.chunk_id, p.document_version) not in kept for p in outcome.plan.passages)

    async def count_prompt_frame(self, question: str, history: list[Turn]) -> None:
        """Warm the token-count cache with what the prompt budget will count besides the passages. Never raises:
        a count that fails here is made (or estimated) again when the prompt is built."""
        with contextlib.suppress(Exception):
            await self.llm.tokens.budget_counts(texts_to_count_early(question, history))

    async def _generate(self, turn: TurnInput, stop: asyncio.Event, outcome: TurnOutcome) -> AsyncGenerator[str, None]:
        started = time.monotonic()
        # Count what the prompt budget will count besides the passages while they are searched (a short question
        # is bounded by its bytes; a longer one, or new history, is a round trip to the model server): the budget
        # then finds the counts cached.
        counting = asyncio.create_task(self.count_prompt_frame(turn.question, turn.history))
        counting.add_done_callback(consume_exception)
        try:
            found = turn.found if turn.found is not None else await self.search_passages(turn.question, turn.access)
        except Exception as exc:  # noqa: BLE001 - any store or embedder failure is the same fault to the person
            counting.cancel()
            log.warning("chat_retrieval_failed", error=type(exc).__name__)
            outcome.status, outcome.error = "failed", STORE_DOWN
            return
        finally:
            # Never raises (a failed count falls back to estimates by itself); done by now in all but odd cases.
            await asyncio.wait([counting])
        outcome.hits = found.hits
        checked = False

        async def settle() -> bool:
            """Apply the version check once (see `_checked`); True when the prompt held a stale passage."""
            nonlocal checked
            if checked:
                return False
            checked = True
            return await self._checked(found, outcome)

        try:
            # The model is asked while the passages' version check runs; the check is waited for before the first
            # token is shown (and before a turn without tokens ends). A passage found stale is dropped and, when it
            # was in the prompt, the model is asked again without it: nothing of the first try was shown.
            if found.current.done():
                await settle()  # no stale passage reaches even the first prompt
            while True:
                if not outcome.hits and not turn.policy.allow_general_answers:
                    await settle()
                    outcome.plan, outcome.content = None, NO_PASSAGES
                    return
                if not await self._plan(turn, outcome):
                    await settle()
                    return
                stale = False
                async with contextlib.aclosing(self._ask_model(turn, stop, outcome, started)) as pieces:
                    async for piece in pieces:
                        if stale := await settle():
                            break
                        yield piece
                if stale:
                    outcome.status, outcome.error, outcome.content, outcome.usage = "complete", None, "", StreamUsage()
                    continue
                if await settle():  # the model sent no token, and the prompt held a stale passage
                    if outcome.status == "complete":  # an empty answer: ask again without it
                        outcome.usage = StreamUsage()
                        continue
                    await self._plan(turn, outcome)  # failed or stopped: list only current passages
                return
        except VersionCheckFailed as exc:
            log.warning("chat_version_check_failed", error=str(exc))
            # Passages whose version is unknown are neither shown nor kept.
            outcome.status, outcome.error, outcome.content = "failed", STORE_DOWN, ""
            outcome.plan, outcome.hits = None, []

    async def _plan(self, turn: TurnInput, outcome: TurnOutcome) -> bool:
        """Budget the prompt for `outcome.hits`; False (and the turn failed) when the question alone cannot fit."""
        settings = self.runtime.settings
        try:
            outcome.plan = await build_prompt(
                turn.question, outcome.hits, turn.history, self.llm.tokens.budget_counts,
                context_window=settings.llm_context_window, answer_tokens=turn.policy.max_answer_tokens,
                grounded=bool(outcome.hits),
            )
        except PromptTooLong as exc:
            outcome.plan = None
            outcome.status, outcome.error = "failed", str(exc).capitalize() + "."
            return False
        return True

    async def _ask_model(
        self, turn: TurnInput, stop: asyncio.Event, outcome: TurnOutcome, started: float
    ) -> AsyncGenerator[str, None]:
        """Stream the model's answer to `outcome.plan` into `outcome` (content, status, usage) and yield its pieces."""
        assert outcome.plan is not None
        outcome.model = self.llm.model
        parts: list[str] = []
        first_token_at: float | None = None
        try:
            stream = self.llm.stream_chat(outcome.plan.messages, max_tokens=turn.policy.max_answer_tokens)
            async with contextlib.aclosing(stream):
                async for piece in stream:
                    if isinstance(piece, StreamUsage):
                        outcome.usage = piece
                        continue
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                        TIME_TO_FIRST_TOKEN.observe(first_token_at - started)
                    parts.append(piece)
                    yield piece
                    if stop.is_set():
                        outcome.status = "incomplete"
                        break
        except LLMTimeout:
            outcome.status, outcome.error = "failed", LLM_SLOW
        except LLMError as exc:
            log.warning("chat_llm_failed", error=str(exc))
            outcome.status, outcome.error = "failed", LLM_DOWN
        except (asyncio.CancelledError, GeneratorExit):
            outcome.status = "incomplete"
            raise
        finally:
            outcome.content = "".join(parts)
            if first_token_at is not None and len(parts) > 1:
                TOKENS_PER_SECOND.observe(len(parts) / max(time.monotonic() - first_token_at, 1e-3))
            LLM_TOKENS.labels(kind="completion").inc(len(parts))
            LLM_TOKENS.labels(kind="prompt").inc(outcome.plan.prompt_tokens)

    async def _save(self, turn: TurnInput, outcome: TurnOutcome) -> AnswerView:
        passages = outcome.plan.passages if outcome.plan else outcome.hits
        cited = cited_numbers(outcome.content) if outcome.plan and outcome.plan.passages else set()
        sources = _sources(passages, cited)
        now = self.runtime.clock.now()
        detail = {
            "status": outcome.status,
            "conversation_id": turn.conversation_id,
            "retrieved_chunk_ids": [h.chunk_id for h in outcome.hits],
            "retrieved_document_ids": sorted({h.document_id for h in outcome.hits}),
            "cited_chunk_ids": [s.chunk_id for s in sources if s.cited],
            "cited_document_ids": sorted({s.document_id for s in sources if s.cited}),
            "prompt_tokens": outcome.plan.prompt_tokens if outcome.plan else 0,
            "completion_tokens": outcome.usage.completion_tokens,
            "zero_retention": turn.ephemeral,
        }
        # Statements only, no reads first: on SQLite this unit of work holds the one write lock.
        def save(session: Session) -> None:
            if not turn.ephemeral:
                saved = session.execute(_SAVE_ANSWER, {
                    "saved_answer_id": turn.answer_id, "content": outcome.content, "status": outcome.status,
                    "error": outcome.error, "model": outcome.model,
                    "prompt_tokens": outcome.usage.prompt_tokens or (outcome.plan.prompt_tokens if outcome.plan else 0),
                    "completion_tokens": outcome.usage.completion_tokens, "finished_at": now,
                })
                if saved.rowcount == 1:  # type: ignore[attr-defined] # 0: the conversation was deleted meanwhile
                    if sources:
                        session.execute(_INSERT_CITATIONS, [
                            {"message_id": turn.answer_id, "ordinal": s.number, "chunk_id": s.chunk_id,
                             "document_id": s.document_id, "collection_id": hit.collection_id, "score": hit.score,
                             "cited": s.cited}
                            for s, hit in zip(sources, passages, strict=True)
                        ])
                    if turn.conversation_id is not None:
                        session.execute(_TOUCH_CONVERSATION, {"touched_conversation_id": turn.conversation_id,
                                                              "updated_at": now})
            append_audit_sync(
                session, at=now, action="chat.answer", context=turn.context,
                object_type="ephemeral_turn" if turn.ephemeral else "message",
                object_ids=[] if turn.ephemeral else [turn.answer_id],
                outcome="allowed", model=outcome.model, detail=detail,
            )

        await run_unit(self.runtime.db, save, write=True)
        # A Stop request's key is left to expire (30 minutes): Retry clears it before the answer runs again, and
        # deleting it here cost every stopped or abandoned answer one more write transaction.
        notice = outcome.error or (
            "This answer was stopped before it finished; what arrived is kept." if outcome.status == "incomplete" else None
        )
        return AnswerView(answer_id=turn.answer_id, status=outcome.status, content=outcome.content, notice=notice,
                          sources=sources, model=outcome.model, ephemeral=turn.ephemeral,
                          retryable=outcome.status == "failed" and not turn.ephemeral)
