"""Asking and answering: save the question first, then retrieve, prompt, stream the model's answer and save it.

The stream request itself does the work for a pending answer stored in the database, so any portal process can
serve it; Stop is signalled through shared state (database or Redis). Zero-retention turns live only in a
short-lived shared record until they are answered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from portal.access import retrieval_filter, retrieval_filter_in_unit
from portal.audit import AuditContext, append_audit, append_audit_sync
from portal.chat.conversations import (
    ChatNotFound,
    owned_conversation,
    owned_conversation_in_unit,
    owned_message,
    title_from_question,
)
from portal.chat.policy import RATE_WINDOW, ChatPolicy, chat_policy, chat_policy_in_unit
from portal.chat.shared_state import DatabaseState, SharedState
from portal.chat.turns import (
    INTERRUPTED,
    ChatEvent,
    ClaimLost,
    DoneEvent,
    FoundPassages,
    PreparedTurn,
    TokenEvent,
    TurnInput,
    TurnRunner,
    consume_exception,
    live_key,
)
from portal.chat.views import AnswerView, ReadableDocuments, stored_answer_view
from portal.db.base import new_id
from portal.db.engine import on_async_session, run_unit, transaction
from portal.db.models import Citation, Message
from portal.db.tables import CONVERSATIONS, MESSAGES
from portal.principal import Principal
from portal.runtime import Runtime
from rag.llm import LLMClient
from rag.prompt import Turn
from rag.types import AccessFilter

MAX_QUESTION_CHARS = 4000
HISTORY_TURNS = 12  # the most recent turns offered to the prompt budget
EPHEMERAL_PREFIX = "z-"
EPHEMERAL_TTL = timedelta(minutes=10)
# The statements on every question's way to its first token are built once, on table columns (see portal.db.tables).
_INSERT_CONVERSATION = insert(CONVERSATIONS)
_INSERT_MESSAGES = insert(MESSAGES)
# A person's own pending answer becomes theirs to write (see `_claim_pending`).
_CLAIM = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("claim_answer_id"), MESSAGES.c.role == "assistant",
           MESSAGES.c.status == "pending",
           MESSAGES.c.conversation_id.in_(select(CONVERSATIONS.c.id)
                                          .where(CONVERSATIONS.c.user_id == bindparam("claim_user_id"))))
    .values(status="streaming")
)


class QuestionRejected(ValueError):
    """The question cannot be asked as sent; the message says why in plain words."""


class RateLimited(Exception):
    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"You have asked {limit} questions in the last minute, which is the limit for your role. "
            f"Please wait {retry_after_s} seconds and ask again."
        )
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class AskResult:
    answer_id: str
    conversation_id: str | None  # None for a zero-retention turn
    ephemeral: bool = False

    @property
    def stream_url(self) -> str:
        return f"/chat/stream/{self.answer_id}"


def _coalesce_tokens(
    first: TokenEvent, queue: asyncio.Queue[ChatEvent | None]
) -> tuple[TokenEvent, list[ChatEvent | None]]:
    """`first` joined with the token events queued behind it, and the event that ended the run of tokens, if one
    was taken from the queue (None there is the end of the stream)."""
    texts = [first.text]
    while not queue.empty():
        following = queue.get_nowait()
        if not isinstance(following, TokenEvent):
            return TokenEvent("".join(texts)), [following]
        texts.append(following.text)
    return TokenEvent("".join(texts)), []


def _earlier_messages_in_unit(session: Session, conversation_id: str, before: datetime) -> Sequence[Message]:
    """The turns before an answer, newest first: its question, then up to HISTORY_TURNS earlier turns."""
    return session.execute(
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.created_at < before)
        .order_by(Message.created_at.desc())
        .limit(HISTORY_TURNS + 1)
    ).scalars().all()


_earlier_messages = on_async_session(_earlier_messages_in_unit)


def _history(earlier: Sequence[Message]) -> list[Turn]:
    """Prompt history, oldest first, from earlier turns newest first (answers that failed or are empty left out)."""
    return [
        Turn(role="user" if m.role == "user" else "assistant", content=m.content)
        for m in reversed(earlier)
        if m.content and m.status in ("complete", "incomplete")
    ]


def _minute_start(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class _NewTurn:
    """The rows a question added: its conversation (new or not), the question and its pending answer."""

    conversation_id: str
    question_id: str
    answer_id: str
    answer_created_at: datetime


@dataclass(frozen=True)
class _SavedQuestion:
    """What the question's unit of work read and wrote. The turn is None for a zero-retention turn, which keeps
    nothing and is worked out by its stream."""

    policy: ChatPolicy
    turn: _NewTurn | None = None
    history: list[Turn] = field(default_factory=list)
    access: AccessFilter | None = None  # the person's retrieval filter, for the question's early search


@dataclass
class ChatService:
    """One per portal process: the LLM client, shared state, and the Stop events of the streams it serves."""

    runtime: Runtime
    llm: LLMClient
    state: SharedState
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.runner = TurnRunner(self.runtime, self.llm, self.state)

    @property
    def now(self) -> datetime:
        return self.runtime.clock.now()

    async def policy_for(self, principal: Principal) -> ChatPolicy:
        async with self.runtime.db() as session:
            return await chat_policy(session, self.runtime.settings, principal)

    # Asking ----------------------------------------------------------------------------------------------

    async def ask(
        self, principal: Principal, question: str, conversation_id: str | None, context: AuditContext
    ) -> AskResult:
        question = question.strip()
        if not question:
            raise QuestionRejected("Please type a question first.")
        if len(question) > MAX_QUESTION_CHARS:
            raise QuestionRejected(f"Please keep a question under {MAX_QUESTION_CHARS} characters.")
        # The question's embedding starts now, while the question is saved and the page opens the answer's stream;
        # so does the search for its passages, which needs only the question's vector and the person's retrieval
        # filter (read by the unit of work that saves the question, usually done before the vector is ready).
        # (The model is called by the answer's stream, which can only claim an answer once it is saved.)
        self.runner.embed_early(question)
        access: asyncio.Future[AccessFilter] = asyncio.get_running_loop().create_future()
        searching = asyncio.create_task(self._search_early(question, access), name="chat-search-early")
        searching.add_done_callback(consume_exception)
        try:
            return await self._save_question(principal, question, conversation_id, context, searching, access)
        except BaseException:
            # Not asked (over the limit, not theirs): neither the embedding nor the passages are needed.
            searching.cancel()
            self.runner.drop_early(question)
            raise

    async def _search_early(
        self, question: str, access_read: asyncio.Future[AccessFilter]
    ) -> tuple[AccessFilter, FoundPassages | None]:
        """The person's retrieval filter, and the passages it lets them read (None: the search failed here; the
        stream searches again and reports a failure)."""
        access = await access_read
        try:
            return access, await self.runner.search_passages(question, access)
        except Exception:  # noqa: BLE001
            return access, None

    async def _save_question(
        self, principal: Principal, question: str, conversation_id: str | None, context: AuditContext,
        searching: asyncio.Task[tuple[AccessFilter, FoundPassages | None]], access_read: asyncio.Future[AccessFilter],
    ) -> AskResult:
        now = self.now
        settings = self.runtime.settings
        window_start = _minute_start(now)
        rate_key = f"chat:{principal.user_id}"
        db_state = self.state if isinstance(self.state, DatabaseState) else None
        # A counter held elsewhere (Redis) is counted first; a database-held one joins the unit of work below, where
        # an over-the-limit question rolls back its own count (it is not a question asked).
        counted = None if db_state else await self.state.count_in_window(rate_key, window_start, RATE_WINDOW)
        audit_detail: dict[str, object] = {"question_chars": len(question)}
        if settings.audit_question_text:
            audit_detail["question"] = question

        def save(session: Session) -> _SavedQuestion:
            """One unit of work: the person's chat policy, the rate counter, the question, its pending answer and
            the audit record; and the conversation's history for the answer's preparation (one round trip fewer)."""
            policy = chat_policy_in_unit(session, settings, principal)
            count = counted if db_state is None else db_state.count_in_unit(session, rate_key, window_start, RATE_WINDOW)
            if count is not None and count > policy.questions_per_minute:
                retry_after = max(1, int((window_start + RATE_WINDOW - now).total_seconds()) + 1)
                raise RateLimited(policy.questions_per_minute, retry_after)
            detail = {**audit_detail, "zero_retention": policy.zero_retention}
            if policy.zero_retention:
                append_audit_sync(session, at=now, action="chat.question", context=context,
                                  object_type="ephemeral_turn", detail=detail)
                return _SavedQuestion(policy)
            turn = self._add_turn(session, principal, question, conversation_id, now)
            append_audit_sync(session, at=now, action="chat.question", context=context, object_type="conversation",
                              object_ids=[turn.conversation_id, turn.question_id, turn.answer_id], detail=detail)
            # The turns before this question (the newest one read here is the question itself).
            earlier = (_earlier_messages_in_unit(session, turn.conversation_id, turn.answer_created_at)
                       if conversation_id else [])
            return _SavedQuestion(policy, turn, _history(earlier[1:]), retrieval_filter_in_unit(session, principal, now))

        saved = await run_unit(self.runtime.db, save, write=True)
        if saved.access is not None:
            access_read.set_result(saved.access)
        turn = saved.turn
        if turn is None:
            searching.cancel()  # a zero-retention turn is worked out by its stream
            token = EPHEMERAL_PREFIX + secrets.token_urlsafe(24)
            record = json.dumps({"user_id": principal.user_id, "question": question}).encode()
            # After the unit of work: a database-held store writes in its own transaction.
            await self.state.put(f"chat:turn:{token}", record, EPHEMERAL_TTL)
            return AskResult(answer_id=token, conversation_id=None, ephemeral=True)
        # While the page opens the answer's stream, work out what the answer needs (a head start for this process;
        # a stream served elsewhere works it out itself).
        self.runner.prepared.start(turn.answer_id, self._prepare(principal, question, turn, context, saved.policy,
                                                                 saved.history, searching),
                                   name=f"chat-prepare-{turn.answer_id}")
        return AskResult(answer_id=turn.answer_id, conversation_id=turn.conversation_id)

    async def _prepare(
        self, principal: Principal, question: str, turn: _NewTurn, context: AuditContext, policy: ChatPolicy,
        history: list[Turn], searching: asyncio.Task[tuple[AccessFilter, FoundPassages | None]],
    ) -> PreparedTurn:
        # Warms the token-count cache for the prompt; not waited for (the model server may be slow or down: the
        # turn then counts, or fails, by itself).
        self._track(asyncio.create_task(self.runner.count_prompt_frame(question, history), name="chat-count-early"))
        try:
            access, found = await searching
        except BaseException:
            searching.cancel()  # this preparation was dropped (too old, or its stream went elsewhere)
            raise
        early = None
        head_start_s = self.runtime.settings.chat_answer_head_start_s
        if head_start_s > 0 and found is not None:
            # The model is asked now; the stream that takes this preparation shows the answer once it has claimed it.
            early = self.runner.begin(
                TurnInput(answer_id=turn.answer_id, principal=principal, question=question, history=history,
                          policy=policy, access=access, context=context, ephemeral=False,
                          conversation_id=turn.conversation_id, found=found),
                head_start_s)
        return PreparedTurn(user_id=principal.user_id, roles=principal.roles, question=question, history=history,
                            policy=policy, access=access, conversation_id=turn.conversation_id, found=found,
                            early=early)

    @staticmethod
    def _add_turn(
        session: Session, principal: Principal, question: str, conversation_id: str | None, now: datetime
    ) -> _NewTurn:
        """The question and its pending answer, in a new conversation or at the end of one of the person's own.
        Plain INSERT statements: the ORM's unit of work for the same three rows cost about a millisecond more on
        the question's path, and nothing here needs the rows as objects."""
        if conversation_id:
            conversation = owned_conversation_in_unit(session, principal.user_id, conversation_id)
            # Strictly increasing times keep the turns in order even when the clock stands still (tests, drills).
            last = session.execute(
                select(func.max(Message.created_at)).where(Message.conversation_id == conversation.id)
            ).scalar_one_or_none()
            asked_at = max(now, last + timedelta(microseconds=1)) if last else now
            conversation.updated_at = now
        else:
            conversation_id = new_id()
            session.execute(_INSERT_CONVERSATION, {"id": conversation_id, "user_id": principal.user_id,
                                                   "title": title_from_question(question), "created_at": now,
                                                   "updated_at": now})
            asked_at = now
        turn = _NewTurn(conversation_id, new_id(), new_id(), asked_at + timedelta(microseconds=1))
        session.execute(_INSERT_MESSAGES, [
            {"id": turn.question_id, "conversation_id": conversation_id, "role": "user", "content": question,
             "status": "complete", "created_at": asked_at, "finished_at": asked_at},
            {"id": turn.answer_id, "conversation_id": conversation_id, "role": "assistant", "content": "",
             "status": "pending", "created_at": turn.answer_created_at, "finished_at": None},
        ])
        return turn

    # Answering -------------------------------------------------------------------------------------------

    async def _claim(self, principal: Principal, answer_id: str, context: AuditContext) -> TurnInput | AnswerView:
        """The turn to run, or the finished answer when it is not (or no longer) pending."""
        now = self.now
        if answer_id.startswith(EPHEMERAL_PREFIX):
            raw = await self.state.take(f"chat:turn:{answer_id}")
            record = json.loads(raw) if raw else None
            if record is None or record.get("user_id") != principal.user_id:
                raise ChatNotFound("This answer is no longer available: with zero retention nothing is kept.")
            async with self.runtime.db() as session:
                policy = await chat_policy(session, self.runtime.settings, principal)
                access = await retrieval_filter(session, principal, now)
            return TurnInput(answer_id=answer_id, principal=principal, question=str(record["question"]), history=[],
                             policy=policy, access=access, context=context, ephemeral=True)
        prepared = self.runner.prepared.take(answer_id)
        if prepared is not None:
            fast = await self._claim_prepared(principal, answer_id, context, prepared)
            if fast is not None:
                return fast
        # Everything the turn needs is read first; the write lock is then held for the one claiming UPDATE only.
        async with self.runtime.db() as session:
            message, conversation = await owned_message(session, principal.user_id, answer_id)
            if message.role != "assistant":
                raise ChatNotFound("That answer does not exist, or it is not yours.")
            turn = None  # None: left streaming by a process that stopped
            if message.status == "pending":
                turn = await self._read_turn(session, principal, message, conversation.id, context)
            elif message.status != "streaming" or await self.state.get(live_key(message.id)) is not None:
                return await self._finished_view(session, principal, message)
        if turn is None:
            return await self._mark_interrupted(principal, message.id, context)
        if not await self._claim_pending(answer_id, principal.user_id):
            # Another window or process claimed it between our read and our update.
            return await self._view_of(principal, answer_id)
        return turn

    async def _read_turn(
        self, session: AsyncSession, principal: Principal, answer: Message, conversation_id: str, context: AuditContext
    ) -> TurnInput:
        """What a turn needs, read in the caller's session: its question and history, policy and access filter."""
        earlier = await _earlier_messages(session, conversation_id, answer.created_at)
        if not earlier or earlier[0].role != "user":
            raise ChatNotFound("The question of this answer is missing.")
        policy = await chat_policy(session, self.runtime.settings, principal)
        access = await retrieval_filter(session, principal, self.now)
        return TurnInput(answer_id=answer.id, principal=principal, question=earlier[0].content,
                         history=_history(earlier[1:]), policy=policy, access=access, context=context,
                         ephemeral=False, conversation_id=conversation_id)

    async def _claim_pending(self, answer_id: str, user_id: str) -> bool:
        """Mark the person's own pending answer as being written here: one UPDATE, with the first heartbeat in the
        same unit of work where shared state lives in the database. False: not theirs, or not pending (any more)."""
        db_state = self.state if isinstance(self.state, DatabaseState) else None
        live_ttl = self.runner.live_ttl

        def claim(session: Session) -> bool:
            claimed = session.execute(_CLAIM, {"claim_answer_id": answer_id, "claim_user_id": user_id})
            won = claimed.rowcount == 1  # type: ignore[attr-defined]
            if db_state is not None and won:
                # Claimed and live are seen together.
                db_state.put_many_in_unit(session, [live_key(answer_id)], b"1", live_ttl)
            return won

        won = await run_unit(self.runtime.db, claim, write=True)
        if won and db_state is not None:
            self.runner.beaten([answer_id])
        elif won:
            # The first heartbeat, off the critical path (the runner's watcher renews it every few seconds).
            self._track(asyncio.create_task(self.runner.beat([answer_id]), name=f"chat-beat-{answer_id}"))
        return won

    async def _claim_prepared(
        self, principal: Principal, answer_id: str, context: AuditContext, prepared: asyncio.Task[PreparedTurn]
    ) -> TurnInput | None:
        """The fast way to a turn, when this process saved the question: claim it while its preparation finishes.
        None: use the ordinary way (not claimable here and now, or the preparation does not fit this person)."""
        claiming = asyncio.create_task(self._claim_pending(answer_id, principal.user_id))
        try:
            ready: PreparedTurn | None = await prepared
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this stream is being cancelled, not just the preparation (shutdown)
            ready = None
        except Exception:  # noqa: BLE001 - preparing is only a head start
            ready = None
        if ready is None or not ready.fits(principal):
            if ready is not None and ready.early is not None:
                ready.early.abandon()  # begun for this person's earlier roles (or someone else)
            if not await claiming:
                return None
            # Claimed, but what was prepared is not for this person's current roles: work it out now.
            return await self._turn_for_claimed(principal, answer_id, context)
        # The model is asked while the claim's UPDATE runs: the turn shows and saves nothing until it is won, and
        # stops (ClaimLost) if another stream won it.
        early = ready.early if ready.early is not None and ready.early.take() else None
        return TurnInput(answer_id=answer_id, principal=principal, question=ready.question, history=ready.history,
                         policy=ready.policy, access=ready.access, context=context, ephemeral=False,
                         conversation_id=ready.conversation_id, found=ready.found, claim=claiming, early=early)

    async def _turn_for_claimed(self, principal: Principal, answer_id: str, context: AuditContext) -> TurnInput:
        async with self.runtime.db() as session:
            message, conversation = await owned_message(session, principal.user_id, answer_id)
            return await self._read_turn(session, principal, message, conversation.id, context)

    async def end_interrupted_answers(self, principal: Principal, conversation_id: str, context: AuditContext) -> None:
        """Before a conversation is shown: answers left `streaming` by a process that stopped become failed
        (retryable), so the page (with or without JavaScript) offers Retry instead of 'still being written'."""
        async with self.runtime.db() as session:
            await owned_conversation(session, principal.user_id, conversation_id)
            streaming = list((await session.execute(
                select(Message.id).where(Message.conversation_id == conversation_id, Message.status == "streaming")
            )).scalars())
        if not streaming:
            return
        live = await self.state.present([live_key(answer_id) for answer_id in streaming])
        for answer_id in streaming:
            if live_key(answer_id) not in live:
                await self._end_interrupted(answer_id, context)

    async def _end_interrupted(self, answer_id: str, context: AuditContext) -> None:
        now = self.now
        async with transaction(self.runtime.db) as session:
            ended = await session.execute(
                update(Message)
                .where(Message.id == answer_id, Message.status == "streaming")
                .values(status="failed", error=INTERRUPTED, finished_at=now)
            )
            if ended.rowcount == 1:  # type: ignore[attr-defined]
                await append_audit(session, at=now, action="chat.answer_interrupted", context=context,
                                   object_type="message", object_ids=[answer_id], outcome="allowed")

    async def _mark_interrupted(self, principal: Principal, answer_id: str, context: AuditContext) -> AnswerView:
        """An answer left `streaming` by a process that stopped: end it as failed (retryable), once."""
        await self._end_interrupted(answer_id, context)
        return await self._view_of(principal, answer_id)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finished_view(self, session: AsyncSession, principal: Principal, message: Message) -> AnswerView:
        citations = (
            await session.execute(select(Citation).where(Citation.message_id == message.id).order_by(Citation.ordinal))
        ).scalars().all()
        return await stored_answer_view(session, ReadableDocuments(session, principal, self.now), message, citations)

    async def stream(self, principal: Principal, answer_id: str, context: AuditContext) -> AsyncGenerator[ChatEvent, None]:
        """Events for one answer. The work runs in its own task: if the reader goes away (tab closed, network cut)
        the task notices at the next token, saves what arrived as incomplete, and ends."""
        claimed = await self._claim(principal, answer_id, context)
        if isinstance(claimed, AnswerView):
            yield DoneEvent(claimed)
            return
        queue: asyncio.Queue[ChatEvent | None] = asyncio.Queue()
        stop = self._stop_flag(claimed)

        async def produce() -> None:
            try:
                async for event in self._run(principal, answer_id, context, claimed, stop):
                    queue.put_nowait(event)
            finally:
                queue.put_nowait(None)

        self._track(asyncio.create_task(produce(), name=f"chat-answer-{answer_id}"))
        try:
            while (event := await queue.get()) is not None:
                after: list[ChatEvent | None] = []
                if isinstance(event, TokenEvent) and not queue.empty():
                    # The reader fell behind (a busy process, a slow network): send what is waiting as one event
                    # rather than one write per token. Nothing is held back to wait for more.
                    event, after = _coalesce_tokens(event, queue)
                yield event
                if after:
                    if after[0] is None:
                        break
                    yield after[0]
        finally:
            stop.set()  # a no-op when the answer finished; otherwise the reader left: keep what arrived

    async def answer_whole(self, principal: Principal, answer_id: str, context: AuditContext) -> AnswerView:
        """The no-JavaScript path: run the turn in this request and return the finished answer."""
        claimed = await self._claim(principal, answer_id, context)
        if isinstance(claimed, AnswerView):
            return claimed
        final: AnswerView | None = None
        async for event in self._run(principal, answer_id, context, claimed, self._stop_flag(claimed)):
            if isinstance(event, DoneEvent):
                final = event.answer
        assert final is not None
        return final

    async def _run(
        self, principal: Principal, answer_id: str, context: AuditContext, turn: TurnInput, stop: asyncio.Event
    ) -> AsyncGenerator[ChatEvent, None]:
        """The events of a claimed turn. When its claim was still being made and another stream won it (ClaimLost),
        the answer is looked at again the ordinary way: that stream is writing it, or a process that stopped left
        it `streaming` (then it is ended as interrupted)."""
        try:
            async for event in self.runner.run(turn, stop):
                yield event
            return
        except ClaimLost:
            settled = await self._claim(principal, answer_id, context)
        if isinstance(settled, AnswerView):
            yield DoneEvent(settled)
            return
        async for event in self.runner.run(settled, self.runner.local_stop(answer_id, stop)):
            yield event

    def _stop_flag(self, turn: TurnInput) -> asyncio.Event:
        """The Stop flag of a claimed turn, registered with the runner; a turn whose claim is still being made gets
        its own (its early answer's, when it has one), which the runner registers once the claim is won."""
        if turn.early is not None:
            return turn.early.stop
        return self.runner.local_stop(turn.answer_id) if turn.claim is None else asyncio.Event()

    async def _view_of(self, principal: Principal, answer_id: str) -> AnswerView:
        """The answer as stored now (another stream claimed it and is writing it)."""
        async with self.runtime.db() as session:
            message, _conversation = await owned_message(session, principal.user_id, answer_id)
            return await self._finished_view(session, principal, message)

    async def request_stop(self, principal: Principal, answer_id: str) -> None:
        if not answer_id.startswith(EPHEMERAL_PREFIX):
            async with self.runtime.db() as session:
                await owned_message(session, principal.user_id, answer_id)
        self.runner.signal_stop_here(answer_id)
        await self.state.put(f"chat:stop:{answer_id}", principal.user_id.encode(), timedelta(minutes=30))

    async def retry(self, principal: Principal, answer_id: str, context: AuditContext) -> str:
        """Make a failed answer pending again; returns its id for the stream."""
        async with transaction(self.runtime.db) as session:
            message, _conversation = await owned_message(session, principal.user_id, answer_id)
            if message.role != "assistant" or message.status != "failed":
                raise QuestionRejected("Only an answer that failed can be retried.")
            await session.execute(delete(Citation).where(Citation.message_id == message.id))
            message.status, message.content, message.error, message.finished_at = "pending", "", None, None
            await append_audit(session, at=self.now, action="chat.retry", context=context, object_type="message",
                               object_ids=[message.id])
        await self.state.delete(f"chat:stop:{answer_id}")
        return answer_id

    async def close(self, grace_s: float = 5.0) -> None:
        """Shutdown: answers still being written get `grace_s` (in all) to finish; the rest are cut off, which saves
        what arrived as incomplete, before the model client and shared state close under them."""
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace_s)  # each saves its partial answer (shielded)
        await self.runner.close()
        await self.llm.close()
        await self.state.close()
