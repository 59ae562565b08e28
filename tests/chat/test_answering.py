"""The chat services against real parts: database, vector store, embedding model and the llama.cpp server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import OperationalError

import portal.chat.turns as turns_module
from portal.audit import AuditContext
from portal.chat.answering import ChatService, RateLimited
from portal.chat.conversations import ChatNotFound, citations_by_message
from portal.chat.shared_state import open_shared_state
from portal.chat.turns import (
    INTERRUPTED,
    LLM_DOWN,
    LLM_SLOW,
    NO_PASSAGES,
    STORE_DOWN,
    DoneEvent,
    SourcesEvent,
    TokenEvent,
    live_key,
)
from portal.chat.views import ReadableDocuments, stored_answer_view
from portal.chat.wiring import llm_config
from portal.db.engine import transaction
from portal.db.models import (
    AuditEvent,
    CollectionAccess,
    Conversation,
    Document,
    KeyValue,
    Message,
    RetentionPolicy,
)
from portal.principal import Principal
from rag.chunk import chunk_document
from rag.ingest import store_chunks
from rag.llm import LLMClient
from rag.parse import parse_document
from rag.sparse import Bm25Encoder
from tests.chat.helpers import HAND_HYGIENE_POLICY, IndexedDocument, add_person, sample_library
from tests.conftest import free_port

CTX = AuditContext(user_id="tester")
QUESTION = "How long must staff wash their hands before patient contact?"

pytestmark = pytest.mark.llm


async def collect(events: Any) -> list[Any]:
    return [event async for event in events]


async def messages_of(env: Any, conversation_id: str) -> list[Message]:
    async with env.runtime.db() as session:
        rows = await session.execute(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at)
        )
        return list(rows.scalars())


@pytest.mark.parametrize("head_start_s", [3.0, 0.0], ids=["model-asked-at-save", "model-asked-by-stream"])
async def test_grounded_answer_streams_tokens_then_sources_and_is_saved(
    make_chat_env: Callable[..., Any], head_start_s: float
) -> None:
    env = await make_chat_env(chat_answer_head_start_s=head_start_s)
    hygiene, algebra = await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)

    # The question is stored before anything else happens, with the answer pending.
    stored = await messages_of(env, asked.conversation_id)
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "pending")]
    assert stored[0].content == QUESTION

    events = await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert len(tokens) > 3, "the answer should arrive token by token"
    kinds = [type(e).__name__ for e in events]
    assert kinds[-2:] == ["SourcesEvent", "DoneEvent"] and kinds.count("DoneEvent") == 1
    sources = next(e for e in events if isinstance(e, SourcesEvent)).sources
    assert sources and {s.document_id for s in sources} == {hygiene.document_id}
    done = events[-1].answer
    assert done.status == "complete" and done.content == "".join(tokens)

    answer = (await messages_of(env, asked.conversation_id))[1]
    assert answer.status == "complete" and answer.content == "".join(tokens) and answer.model == "smollm2"
    async with env.runtime.db() as session:
        citations = (await citations_by_message(session, [answer.id]))[answer.id]
        audit = (
            await session.execute(select(AuditEvent).where(AuditEvent.action == "chat.answer"))
        ).scalar_one()
        question_audit = (
            await session.execute(select(AuditEvent).where(AuditEvent.action == "chat.question"))
        ).scalar_one()
    assert [c.ordinal for c in citations] == list(range(1, len(citations) + 1))
    assert {c.document_id for c in citations} == {hygiene.document_id}
    assert audit.model == "smollm2" and audit.detail["retrieved_document_ids"] == [hygiene.document_id]
    assert set(audit.detail["retrieved_chunk_ids"]) <= set(hygiene.chunk_ids)
    # Questions are audited without their text unless the setting asks for it.
    assert "question" not in question_audit.detail and QUESTION not in str(question_audit.detail)


async def test_person_never_gets_passages_of_a_collection_they_cannot_read(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    await sample_library(env.runtime)
    teacher = await add_person(env.runtime, {"teacher"})
    asked = await env.chat.ask(teacher, QUESTION + " Hand hygiene policy, soap and gloves.", None, CTX)
    events = await collect(env.chat.stream(teacher, asked.answer_id, CTX))
    done = events[-1].answer
    assert all("hygiene" not in s.title.lower() for s in done.sources)


async def test_no_passages_answers_without_calling_the_model(make_chat_env: Callable[..., Any]) -> None:
    # The model server address goes nowhere: if it were called, the turn would fail instead.
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    await sample_library(env.runtime)
    nobody = await add_person(env.runtime, {"visitor"})  # a role that reads no collection
    asked = await env.chat.ask(nobody, QUESTION, None, CTX)
    events = await collect(env.chat.stream(nobody, asked.answer_id, CTX))
    assert not any(isinstance(e, TokenEvent) for e in events)
    done = events[-1].answer
    assert done.status == "complete" and done.content == NO_PASSAGES and done.model is None
    # Saved like any answer: the conversation moves to the top of the sidebar, with no citation.
    answer = (await messages_of(env, asked.conversation_id))[-1]
    async with env.runtime.db() as session:
        conversation = await session.get(Conversation, asked.conversation_id)
        citations = (await citations_by_message(session, [answer.id])).get(answer.id, [])
    assert conversation is not None and answer.finished_at is not None
    assert conversation.updated_at == answer.finished_at and citations == []


async def test_role_allowed_general_answers_gets_the_model_without_passages(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(chat_general_answer_roles=["visitor"])
    visitor = await add_person(env.runtime, {"visitor"})
    asked = await env.chat.ask(visitor, "What is a good way to start a staff meeting?", None, CTX)
    done = (await collect(env.chat.stream(visitor, asked.answer_id, CTX)))[-1].answer
    assert done.status == "complete" and done.model == "smollm2" and done.content and done.content != NO_PASSAGES
    assert done.sources == []


async def test_general_answers_from_the_retention_policy_flag(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env()
    async with transaction(env.runtime.db) as session:
        session.add(RetentionPolicy(role="office", conversation_days=30, allow_general_answers=True))
    office = await add_person(env.runtime, {"office"})
    asked = await env.chat.ask(office, "How do I write a polite reminder email?", None, CTX)
    done = (await collect(env.chat.stream(office, asked.answer_id, CTX)))[-1].answer
    assert done.model == "smollm2" and done.content != NO_PASSAGES


async def test_llm_down_keeps_question_shows_passages_and_can_be_retried(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    hygiene, _ = await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert done.status == "failed" and done.notice == LLM_DOWN and done.retryable
    assert {s.document_id for s in done.sources} == {hygiene.document_id}
    stored = await messages_of(env, asked.conversation_id)
    assert stored[0].content == QUESTION and stored[1].status == "failed" and stored[1].error == LLM_DOWN
    # Retry makes it pending again and runs the turn afresh (the model is still down: failed again).
    await env.chat.retry(nurse, asked.answer_id, CTX)
    assert (await messages_of(env, asked.conversation_id))[1].status == "pending"
    again = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert again.status == "failed"


async def test_llm_timeout_is_reported_plainly(make_chat_env: Callable[..., Any]) -> None:
    # A server that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", llm_timeout_s=1.0)
        await sample_library(env.runtime)
        nurse = await add_person(env.runtime, {"nurse"})
        asked = await env.chat.ask(nurse, QUESTION, None, CTX)
        done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    finally:
        silent.close()
    assert done.status == "failed" and done.notice == LLM_SLOW and done.sources


async def test_vector_store_down_keeps_the_question(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    assert env.runtime.store is not None
    await env.runtime.store.close()  # the store goes away under the running portal
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert done.status == "failed" and done.notice == STORE_DOWN and done.retryable
    stored = await messages_of(env, asked.conversation_id)
    assert stored[0].content == QUESTION and stored[1].status == "failed"
    env.runtime.store = None  # already closed; keep runtime.stop() from closing it twice


async def test_stop_keeps_what_arrived_as_incomplete(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_max_tokens=200)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION + " Explain in detail, step by step.", None, CTX)
    received: list[str] = []
    done = None
    async for event in env.chat.stream(nurse, asked.answer_id, CTX):
        if isinstance(event, TokenEvent):
            received.append(event.text)
            if len(received) == 3:
                await env.chat.request_stop(nurse, asked.answer_id)
        elif isinstance(event, DoneEvent):
            done = event.answer
    assert done is not None and done.status == "incomplete"
    answer = (await messages_of(env, asked.conversation_id))[1]
    assert answer.status == "incomplete" and answer.content == "".join(received)
    assert len(received) < 20


async def test_stop_from_another_process_reaches_the_stream_through_shared_state(
    make_chat_env: Callable[..., Any],
) -> None:
    env = await make_chat_env(llm_max_tokens=300, chat_stream_sync_s=0.05)
    other_process = await make_chat_env(database_url=env.runtime.settings.database_url, llm_max_tokens=300)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION + " Explain in detail, step by step.", None, CTX)
    count = 0
    done = None
    async for event in env.chat.stream(nurse, asked.answer_id, CTX):
        if isinstance(event, TokenEvent):
            count += 1
            if count == 2:
                await other_process.chat.request_stop(nurse, asked.answer_id)
        elif isinstance(event, DoneEvent):
            done = event.answer
    assert done is not None and done.status == "incomplete" and count < 60


async def test_reader_gone_mid_stream_saves_partial_answer_as_incomplete(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_max_tokens=200)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION + " Explain in detail, step by step.", None, CTX)
    events = env.chat.stream(nurse, asked.answer_id, CTX)
    received = []
    async for event in events:
        if isinstance(event, TokenEvent):
            received.append(event.text)
            if len(received) == 2:
                break
    await events.aclose()  # what the server does when the connection is cut
    for _ in range(200):
        answer = (await messages_of(env, asked.conversation_id))[1]
        if answer.status != "streaming":
            break
        await asyncio.sleep(0.05)
    assert answer.status == "incomplete"
    assert answer.content.startswith("".join(received)) and answer.content


async def test_rate_limit_per_role(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(chat_questions_per_minute=2, chat_role_questions_per_minute={"nurse": 3})
    teacher = await add_person(env.runtime, {"teacher"})
    nurse = await add_person(env.runtime, {"nurse"})
    for _ in range(2):
        await env.chat.ask(teacher, "a question", None, CTX)

    async def saved() -> tuple[int, int, int]:
        async with env.runtime.db() as session:
            return (
                (await session.execute(select(func.count()).select_from(Conversation))).scalar_one(),
                (await session.execute(select(func.count()).select_from(Message))).scalar_one(),
                (await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one(),
            )

    searches: dict[str, asyncio.Task[Any]] = {}
    search_early, never = env.chat._search_early, asyncio.Event()

    async def recorded_search(question: str, access_read: Any) -> Any:
        """The search started beside the question's unit of work, held until it is called off."""
        searches[question] = asyncio.current_task()  # type: ignore[assignment]
        await never.wait()
        return await search_early(question, access_read)

    env.chat._search_early = recorded_search
    before, prepared_before = await saved(), len(env.chat.runner.prepared)
    with pytest.raises(RateLimited) as refused:
        await env.chat.ask(teacher, "one too many", None, CTX)
    assert refused.value.retry_after_s >= 1 and "limit for your role" in str(refused.value)
    assert await saved() == before  # the refused question left no conversation, message or audit record
    # ... nor a preparation, and the search started beside its unit of work was called off.
    assert len(env.chat.runner.prepared) == prepared_before
    await asyncio.wait([searches["one too many"]], timeout=10)
    assert searches["one too many"].cancelled()
    with pytest.raises(RateLimited):  # and it stays refused: rolling back its own count does not reopen the window
        await env.chat.ask(teacher, "still too many", None, CTX)
    for _ in range(3):
        await env.chat.ask(nurse, "a question", None, CTX)
    with pytest.raises(RateLimited):
        await env.chat.ask(nurse, "one too many", None, CTX)


async def test_max_answer_tokens_per_role(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_max_tokens=200, chat_role_max_answer_tokens={"nurse": 5})
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION + " Explain in detail.", None, CTX)
    events = await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    assert 0 < sum(isinstance(e, TokenEvent) for e in events) <= 5


async def test_zero_retention_writes_nothing_of_the_conversation(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env()
    await sample_library(env.runtime)
    async with transaction(env.runtime.db) as session:
        session.add(RetentionPolicy(role="nurse", conversation_days=0))
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    assert asked.ephemeral and asked.conversation_id is None
    events = await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    done = events[-1].answer
    assert done.status == "complete" and done.content and done.ephemeral and done.sources
    async with env.runtime.db() as session:
        assert (await session.execute(select(func.count()).select_from(Message))).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(Conversation))).scalar_one() == 0
        leftovers = (await session.execute(select(KeyValue.key).where(KeyValue.key.like("chat:turn:%")))).all()
        audit_text = str([e.detail for e in (await session.execute(select(AuditEvent))).scalars()])
    assert leftovers == []
    assert QUESTION not in audit_text and done.content not in audit_text
    # The short-lived record is gone: the same answer cannot be streamed twice.
    from portal.chat.conversations import ChatNotFound

    with pytest.raises(ChatNotFound):
        await collect(env.chat.stream(nurse, asked.answer_id, CTX))


async def test_render_time_recheck_drops_a_citation_the_person_can_no_longer_read(
    make_chat_env: Callable[..., Any],
) -> None:
    env = await make_chat_env()
    hygiene, _ = await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    # Nurses lose access to the clinical collection after the answer was written.
    async with transaction(env.runtime.db) as session:
        await session.execute(
            delete(CollectionAccess).where(
                CollectionAccess.collection_id == hygiene.collection_id, CollectionAccess.role == "nurse"
            )
        )
    async with env.runtime.db() as session:
        message = await session.get(Message, asked.answer_id)
        assert message is not None
        citations = (await citations_by_message(session, [message.id]))[message.id]
        assert citations
        readable = ReadableDocuments(session, nurse, env.runtime.clock.now())
        view = await stored_answer_view(session, readable, message, citations)
    assert view.sources == [] and view.withheld_sources == len(citations)
    assert "/chat/passages/" not in str(view.html)


async def _audit_count(env: Any, action: str) -> int:
    async with env.runtime.db() as session:
        return int((await session.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))).scalar_one())


async def test_an_answer_left_streaming_by_a_stopped_process_ends_as_interrupted(
    make_chat_env: Callable[..., Any],
) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")  # the model plays no part
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    # Another process claimed the answer, then died: `streaming`, and nobody renews its heartbeat.
    async with transaction(env.runtime.db) as session:
        await session.execute(update(Message).where(Message.id == asked.answer_id).values(status="streaming"))

    for _look in range(2):  # the page, then a reload: interrupted once, reported the same both times
        done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
        assert done.status == "failed" and done.notice == INTERRUPTED and done.retryable
    async with env.runtime.db() as session:
        stored = await session.get(Message, asked.answer_id)
        assert stored is not None and stored.status == "failed" and stored.finished_at is not None
    assert await _audit_count(env, "chat.answer_interrupted") == 1

    await env.chat.retry(nurse, asked.answer_id, CTX)  # Retry works as for any failed answer
    async with env.runtime.db() as session:
        stored = await session.get(Message, asked.answer_id)
        assert stored is not None and stored.status == "pending"


async def test_an_answer_being_written_by_a_live_process_is_left_alone(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    async with transaction(env.runtime.db) as session:
        await session.execute(update(Message).where(Message.id == asked.answer_id).values(status="streaming"))
    await env.chat.state.put(live_key(asked.answer_id), b"1", timedelta(seconds=30))  # its heartbeat

    done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert done.status == "streaming" and done.notice and "still being written" in done.notice
    async with env.runtime.db() as session:
        stored = await session.get(Message, asked.answer_id)
        assert stored is not None and stored.status == "streaming"
    assert await _audit_count(env, "chat.answer_interrupted") == 0


async def test_a_streaming_answer_announces_its_heartbeat(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(chat_stream_sync_s=0.2)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    assert await env.chat.state.get(live_key(asked.answer_id)) is None  # asked, not yet being written
    stream = env.chat.stream(nurse, asked.answer_id, CTX)
    try:
        assert isinstance(await anext(stream), TokenEvent)
        await asyncio.sleep(0.3)
        assert await env.chat.state.get(live_key(asked.answer_id)) == b"1"
    finally:
        await stream.aclose()


async def test_shutdown_cuts_off_answers_still_waiting_and_keeps_them_as_incomplete(
    make_chat_env: Callable[..., Any],
) -> None:
    """A portal process stopping (deploy, restart) must neither hang on a model that never answers nor leave the
    answer 'streaming': after the grace period the answer is cut off and saved as incomplete."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts the model request, never answers it
    try:
        env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1", llm_timeout_s=60.0)
        await sample_library(env.runtime)
        nurse = await add_person(env.runtime, {"nurse"})
        asked = await env.chat.ask(nurse, QUESTION, None, CTX)
        reader = asyncio.create_task(collect(env.chat.stream(nurse, asked.answer_id, CTX)))
        for _ in range(100):  # until the answer is claimed and waiting on the model
            async with env.runtime.db() as session:
                stored = await session.get(Message, asked.answer_id)
                if stored is not None and stored.status == "streaming":
                    break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)

        started = asyncio.get_running_loop().time()
        await env.chat.close(grace_s=0.5)
        assert asyncio.get_running_loop().time() - started < 3.0  # not the model's 60 s timeout
        await asyncio.wait_for(reader, timeout=3.0)
    finally:
        silent.close()
    async with env.runtime.db() as session:
        stored = await session.get(Message, asked.answer_id)
        assert stored is not None and stored.status == "incomplete" and stored.finished_at is not None


async def _prepared(env: Any, answer_id: str) -> Any:
    """Wait for the preparation this process started when the question was saved."""
    task = env.chat.runner.prepared.peek(answer_id)
    assert task is not None, "saving a question starts preparing its answer"
    return await task


async def test_the_stream_uses_what_was_prepared_while_the_page_opened_it(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    hygiene, _algebra = await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    ready = await _prepared(env, asked.answer_id)
    assert ready.found and {h.document_id for h in ready.found.hits} == {hygiene.document_id}
    assert ready.history == [] and ready.conversation_id == asked.conversation_id
    assert env.runtime.store is not None
    await env.runtime.store.close()  # a search now would fail: the passages can only come from the preparation
    done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert done.notice == LLM_DOWN and {s.document_id for s in done.sources} == {hygiene.document_id}
    assert len(env.chat.runner.prepared) == 0  # taken once
    env.runtime.store = None


async def test_a_follow_up_is_prepared_with_the_conversations_history(make_chat_env: Callable[..., Any]) -> None:
    """The question's own unit of work reads the history and the retrieval filter for the preparation: a follow-up
    gets the earlier question and its answer, exactly what a stream served by another process works out afresh."""
    env = await make_chat_env()
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    first = await env.chat.ask(nurse, QUESTION, None, CTX)
    answered = (await collect(env.chat.stream(nurse, first.answer_id, CTX)))[-1].answer
    assert answered.status in ("complete", "incomplete") and answered.content
    follow_up = await env.chat.ask(nurse, "And after removing gloves?", first.conversation_id, CTX)
    ready = await _prepared(env, follow_up.answer_id)
    assert [(t.role, t.content) for t in ready.history] == [("user", QUESTION), ("assistant", answered.content)]
    async with env.runtime.db() as session:
        answer = await session.get(Message, follow_up.answer_id)
        assert answer is not None
        afresh = await env.chat._read_turn(session, nurse, answer, first.conversation_id, CTX)
    assert afresh.history == ready.history and afresh.access == ready.access and afresh.policy == ready.policy
    assert afresh.question == ready.question == "And after removing gloves?"


async def test_a_stream_that_loses_the_claim_shows_and_saves_nothing(make_chat_env: Callable[..., Any]) -> None:
    """The fast way asks the model while the answer's claim is being made. When another stream (here: another
    process) claimed the answer first, this one shows none of the model's text, saves nothing, and shows the answer
    as it is stored while the other stream writes it."""
    env = await make_chat_env()
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    await _prepared(env, asked.answer_id)
    assert await env.chat._claim_pending(asked.answer_id, nurse.user_id)  # the other stream's claim lands first
    events = await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    assert len(events) == 1 and isinstance(events[0], DoneEvent)
    assert events[0].answer.status == "streaming" and events[0].answer.content == ""
    answer = (await messages_of(env, asked.conversation_id))[-1]
    assert (answer.id, answer.status, answer.content, answer.finished_at) == (asked.answer_id, "streaming", "", None)
    async with env.runtime.db() as session:
        saved = await session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "chat.answer"))
    assert saved == 0


async def test_a_stream_that_loses_the_claim_leaves_the_winners_answer_alone(
    make_chat_env: Callable[..., Any],
) -> None:
    """Two windows of one person stream the same answer from one process: the first takes the preparation (its
    claim delayed here), the second claims the answer the ordinary way first. The first ends at once showing the
    answer as stored; its end does not stop the second, which writes the whole answer."""
    env = await make_chat_env()
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    await _prepared(env, asked.answer_id)
    claim_pending, second_claimed, calls = env.chat._claim_pending, asyncio.Event(), []

    async def first_claim_late(answer_id: str, user_id: str) -> bool:
        calls.append(answer_id)
        if len(calls) == 1:  # the first window's claim: it lands after the second window's
            await second_claimed.wait()
        return await claim_pending(answer_id, user_id)

    async def second_window() -> list[Any]:
        await asyncio.sleep(0)  # the first window takes the preparation first
        events = env.chat.stream(nurse, asked.answer_id, CTX)
        first = await anext(events)  # claimed the ordinary way by now, and writing
        second_claimed.set()
        return [first] + [event async for event in events]

    env.chat._claim_pending = first_claim_late
    first, second = await asyncio.wait_for(
        asyncio.gather(collect(env.chat.stream(nurse, asked.answer_id, CTX)), second_window()), timeout=120
    )
    assert len(first) == 1 and isinstance(first[0], DoneEvent) and first[0].answer.status == "streaming"
    assert isinstance(second[-1], DoneEvent) and second[-1].answer.status == "complete"
    answer = (await messages_of(env, asked.conversation_id))[-1]
    assert answer.status == "complete" and answer.content == second[-1].answer.content


async def test_a_preparation_is_not_used_once_the_persons_roles_changed(make_chat_env: Callable[..., Any]) -> None:
    """Prepared as a nurse, streamed after the identity provider made them a teacher: the passages come from what a
    teacher may read, never from the nurse-time preparation."""
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    hygiene, algebra = await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION + " Algebra, equations, soap.", None, CTX)
    ready = await _prepared(env, asked.answer_id)
    assert ready.found and {h.document_id for h in ready.found.hits} == {hygiene.document_id}
    now_teacher = Principal(user_id=nurse.user_id, display_name=nurse.display_name, email=nurse.email,
                            roles=frozenset({"teacher"}), session_hash=nurse.session_hash)
    done = (await collect(env.chat.stream(now_teacher, asked.answer_id, CTX)))[-1].answer
    assert done.sources and {s.document_id for s in done.sources} == {algebra.document_id}
    async with env.runtime.db() as session:
        audit = (await session.execute(select(AuditEvent).where(AuditEvent.action == "chat.answer"))).scalar_one()
    assert hygiene.document_id not in audit.detail["retrieved_document_ids"]


async def test_someone_elses_stream_neither_claims_nor_uses_a_preparation(make_chat_env: Callable[..., Any]) -> None:
    env = await make_chat_env(llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    other = await add_person(env.runtime, {"nurse"})
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    await _prepared(env, asked.answer_id)
    with pytest.raises(ChatNotFound):
        await collect(env.chat.stream(other, asked.answer_id, CTX))
    stored = await messages_of(env, asked.conversation_id)
    assert stored[1].status == "pending" and stored[1].content == ""
    # The owner's stream still answers (the ordinary way: the preparation was spent on the refused attempt).
    done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert done.notice == LLM_DOWN and done.sources


async def test_heartbeats_are_renewed_before_they_lapse_but_not_at_every_check(
    make_chat_env: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop requests are looked for every 0.05 s here; the heartbeat lasts 0.6 s and is renewed when a third of it
    is gone: never missing while the answer is written, and written far less often than the checks run."""
    monkeypatch.setattr("portal.chat.turns.LIVE_MIN_TTL_S", 0.6)
    env = await make_chat_env(chat_stream_sync_s=0.05, llm_max_tokens=400)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    writes: list[list[str]] = []
    real_put_many = env.chat.state.put_many

    async def counting_put_many(keys: list[str], *args: Any, **kwargs: Any) -> None:
        writes.append(keys)
        await real_put_many(keys, *args, **kwargs)

    monkeypatch.setattr(env.chat.state, "put_many", counting_put_many)
    real_stream_chat = env.chat.llm.stream_chat

    async def slower_model(*args: Any, **kwargs: Any) -> Any:
        """The real model's answer, a token every 50 ms: written for longer than a heartbeat lasts, however short."""
        async for piece in real_stream_chat(*args, **kwargs):
            yield piece
            await asyncio.sleep(0.05)

    monkeypatch.setattr(env.chat.llm, "stream_chat", slower_model)
    asked = await env.chat.ask(nurse, QUESTION + " Explain every step in detail.", None, CTX)
    stream = env.chat.stream(nurse, asked.answer_id, CTX)
    started = asyncio.get_running_loop().time()
    try:
        assert isinstance(await anext(stream), TokenEvent)
        first_token_at, seen = asyncio.get_running_loop().time(), 0  # the model's first token can take a second
        async for event in stream:
            if not isinstance(event, TokenEvent):
                break
            assert await env.chat.state.get(live_key(asked.answer_id)) == b"1"
            seen += 1
            await asyncio.sleep(0.02)  # a slow reader keeps the answer going for a while
            if asyncio.get_running_loop().time() - first_token_at > 1.5:
                break
    finally:
        await stream.aclose()
    elapsed = asyncio.get_running_loop().time() - started
    checks = elapsed / 0.05
    assert seen > 10 and elapsed > 0.8
    beats = [keys for keys in writes if keys == [live_key(asked.answer_id)]]
    assert 2 <= len(beats) <= checks / 2, (len(beats), checks)


NEW_VERSION_TEXT = HAND_HYGIENE_POLICY.replace("for at least 40 seconds", "for at least 95 seconds with chlorhexidine")


async def _index_next_version(env: Any, document: IndexedDocument) -> set[str]:
    """Put version 2 of a document in the vector store the way a replacement does before it becomes current (the
    database still says version 1). Returns the new version's chunk ids (a passage whose text did not change keeps
    its id)."""
    embedder = await env.runtime.wait_for_embedder()
    parsed = parse_document(NEW_VERSION_TEXT.encode(), "hand-hygiene.md")
    chunks = chunk_document(parsed, document.document_id, document.collection_id, 2, embedder.count_tokens,
                            embedder.max_chunk_tokens)
    await store_chunks(chunks, embedder, env.runtime.store, Bm25Encoder())
    return {c.chunk_id for c in chunks}


def _record_prompts(
    env: Any, first_token: asyncio.Event | None = None, asked: asyncio.Event | None = None
) -> list[str]:
    """The text of every prompt the (real) model is sent; `first_token` is set when a first token arrives, `asked`
    when a prompt is sent."""
    prompts: list[str] = []
    stream_chat = env.chat.llm.stream_chat

    async def recording(messages: Any, **kwargs: Any) -> Any:
        prompts.append("\n".join(str(m["content"]) for m in messages))
        if asked is not None:
            asked.set()
        async for piece in stream_chat(messages, **kwargs):
            if first_token is not None and isinstance(piece, str):
                first_token.set()
            yield piece

    env.chat.llm.stream_chat = recording
    return prompts


@pytest.mark.parametrize("head_start_s", [3.0, 0.0], ids=["model-asked-at-save", "model-asked-by-stream"])
async def test_only_current_document_versions_reach_the_prompt_and_the_sources(
    make_chat_env: Callable[..., Any], head_start_s: float
) -> None:
    """While a document is being replaced both versions are in the vector store; only the version the database
    says is current may be used, whichever way the replacement stands. An answer begun when the question was saved
    may have asked the model before the check was done: then it asks again, and only the last prompt is shown."""
    env = await make_chat_env(chat_answer_head_start_s=head_start_s)
    hygiene, _algebra = await sample_library(env.runtime)
    new_chunks = await _index_next_version(env, hygiene)
    changed = new_chunks - set(hygiene.chunk_ids)
    nurse = await add_person(env.runtime, {"nurse"})
    prompts = _record_prompts(env)

    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    found = (await _prepared(env, asked.answer_id)).found
    assert found is not None and changed & {h.chunk_id for h in found.hits}, "the store holds both versions"
    await found.current  # checked before the stream builds its prompt: it asks the model once
    events = await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    done = events[-1].answer
    assert done.status == "complete" and done.sources
    assert done.content == "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert {s.chunk_id for s in done.sources} <= set(hygiene.chunk_ids)
    if head_start_s == 0:
        assert len(prompts) == 1
    else:  # asked before the check was done (then again, without the stale passage), or after it
        assert len(prompts) in (1, 2)
    assert "95 seconds" not in prompts[-1] and "40 seconds" in prompts[-1]

    # The replacement becomes current: now only the new version counts.
    async with transaction(env.runtime.db) as session:
        await session.execute(update(Document).where(Document.id == hygiene.document_id).values(version=2))
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    done = (await collect(env.chat.stream(nurse, asked.answer_id, CTX)))[-1].answer
    assert done.sources and {s.chunk_id for s in done.sources} <= new_chunks
    assert "40 seconds" not in prompts[-1] and "95 seconds" in prompts[-1]
    async with env.runtime.db() as session:
        audit = (await session.execute(
            select(AuditEvent).where(AuditEvent.action == "chat.answer").order_by(AuditEvent.seq.desc()).limit(1)
        )).scalar_one()
    assert set(audit.detail["retrieved_chunk_ids"]) <= new_chunks


async def test_a_stale_passage_found_after_the_model_was_asked_is_never_shown(
    make_chat_env: Callable[..., Any],
) -> None:
    """The stream asks the model while the passages' version check runs (the head start is off here; an answer begun
    early goes the same way through `_generate`). Held here until the model's first token has arrived, the check
    finds a passage of a version that is not current in the prompt: the model is asked again without it, and nothing
    of the first try is shown or saved."""
    env = await make_chat_env(chat_answer_head_start_s=0)
    hygiene, _algebra = await sample_library(env.runtime)
    new_chunks = await _index_next_version(env, hygiene)
    nurse = await add_person(env.runtime, {"nurse"})
    first_token = asyncio.Event()
    prompts = _record_prompts(env, first_token)
    current_only = env.chat.runner._current_only

    async def check_after_the_first_token(hits: Any) -> Any:
        await first_token.wait()
        return await current_only(hits)

    env.chat.runner._current_only = check_after_the_first_token
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    events = await asyncio.wait_for(collect(env.chat.stream(nurse, asked.answer_id, CTX)), timeout=120)
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    done = events[-1].answer
    assert len(prompts) == 2, "asked again once the stale passage was found"
    assert "95 seconds" in prompts[0] and "95 seconds" not in prompts[1] and "40 seconds" in prompts[1]
    assert done.status == "complete" and done.content == tokens
    assert done.sources and {s.chunk_id for s in done.sources} <= set(hygiene.chunk_ids)
    assert not (new_chunks - set(hygiene.chunk_ids)) & {s.chunk_id for s in done.sources}
    answer = (await messages_of(env, asked.conversation_id))[-1]
    assert answer.content == tokens
    async with env.runtime.db() as session:
        cited = {c.chunk_id for c in (await citations_by_message(session, [answer.id]))[answer.id]}
    assert cited and cited <= set(hygiene.chunk_ids)


async def test_a_failed_version_check_fails_the_turn_plainly_and_keeps_the_question(
    make_chat_env: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database cannot say which document versions are current (it went away after the question was saved):
    the turn fails with the plain store notice, shows neither the model's text nor the unchecked passages, and the
    question stays, ready for Retry."""
    env = await make_chat_env()
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    prompts = _record_prompts(env)
    checks: list[str] = []
    run_unit = turns_module.run_unit

    async def versions_unreadable(factory: Any, work: Any, *, write: bool) -> Any:
        if work.__name__ == "current_versions":
            checks.append(work.__name__)
            raise OperationalError("SELECT", {}, Exception("unable to open database file"))
        return await run_unit(factory, work, write=write)

    monkeypatch.setattr(turns_module, "run_unit", versions_unreadable)
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    events = await collect(env.chat.stream(nurse, asked.answer_id, CTX))
    done = events[-1].answer
    assert not [e for e in events if isinstance(e, TokenEvent)], "nothing of the model's answer is shown"
    assert done.status == "failed" and done.notice == STORE_DOWN and done.retryable and not done.sources
    assert checks == ["current_versions"] and len(prompts) <= 1
    stored = await messages_of(env, asked.conversation_id)
    assert [(m.role, m.status, m.content) for m in stored] == [("user", "complete", QUESTION), ("assistant", "failed", "")]


async def test_two_people_asking_at_once_both_get_whole_answers(make_chat_env: Callable[..., Any]) -> None:
    """The embedded llama.cpp server answers one request at a time: a second person's question waits for the
    first answer instead of cutting it short (llama-cpp-python's server interrupts by default)."""
    env = await make_chat_env()
    await sample_library(env.runtime)
    first, second = await add_person(env.runtime, {"nurse"}), await add_person(env.runtime, {"nurse"})
    asked = [await env.chat.ask(person, QUESTION, None, CTX) for person in (first, second)]
    first_token = asyncio.Event()

    async def read(person: Principal, answer_id: str, signal: bool) -> Any:
        events = []
        async for event in env.chat.stream(person, answer_id, CTX):
            events.append(event)
            if signal and isinstance(event, TokenEvent):
                first_token.set()
        return events

    async def second_reader() -> Any:
        await first_token.wait()  # the first answer is being written when the second question reaches the model
        return await read(second, asked[1].answer_id, False)

    results = await asyncio.wait_for(
        asyncio.gather(read(first, asked[0].answer_id, True), second_reader()), timeout=120
    )
    for events in results:
        done = events[-1].answer
        tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
        assert done.status == "complete" and done.notice is None and done.content == tokens and tokens


async def test_the_model_is_asked_when_the_question_is_saved_and_shown_once_the_stream_claims_it(
    make_chat_env: Callable[..., Any],
) -> None:
    """The process that saved the question asks the model at once; its tokens wait, neither shown nor saved, until
    the page's stream claims the answer, and the model is not asked again."""
    env = await make_chat_env(chat_answer_head_start_s=60)  # however slow this machine's model is to its first token
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    first_token = asyncio.Event()
    prompts = _record_prompts(env, first_token)
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    await asyncio.wait_for(first_token.wait(), timeout=60)  # no stream is open yet
    stored = await messages_of(env, asked.conversation_id)
    assert [(m.status, m.content) for m in stored] == [("complete", QUESTION), ("pending", "")]
    async with env.runtime.db() as session:
        assert await session.get(KeyValue, live_key(asked.answer_id)) is None  # nobody claims to be writing it
    events = await asyncio.wait_for(collect(env.chat.stream(nurse, asked.answer_id, CTX)), timeout=120)
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    done = events[-1].answer
    assert tokens and done.status == "complete" and done.content == tokens and done.sources
    assert len(prompts) == 1, "the stream used the answer begun when the question was saved"
    answer = (await messages_of(env, asked.conversation_id))[-1]
    assert (answer.status, answer.content) == ("complete", tokens)


async def test_an_answer_begun_early_that_no_stream_takes_in_time_is_cancelled(
    make_chat_env: Callable[..., Any],
) -> None:
    """The page's stream came later than the head start allows: the early model request was closed, and the stream
    asks the model itself."""
    env = await make_chat_env(chat_answer_head_start_s=0.2, llm_max_tokens=400)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    prompts = _record_prompts(env)
    asked = await env.chat.ask(nurse, QUESTION, None, CTX)
    early = (await _prepared(env, asked.answer_id)).early
    assert early is not None
    await asyncio.sleep(0.6)
    assert early.cancelled and not early.take()
    assert len(env.chat.runner._early) == 0
    events = await asyncio.wait_for(collect(env.chat.stream(nurse, asked.answer_id, CTX)), timeout=120)
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    done = events[-1].answer
    assert len(prompts) == 2 and prompts[0] == prompts[1]
    assert tokens and done.status == "complete" and done.content == tokens


async def test_a_stream_served_by_another_process_asks_the_model_itself(
    make_chat_env: Callable[..., Any],
) -> None:
    """Several portal processes: the question was saved by one, its stream is served by another. The other claims
    and writes the answer with its own model request; the first process's early answer shows and saves nothing and
    its model request is closed when its head start is over."""
    env = await make_chat_env(chat_answer_head_start_s=0.5, llm_max_tokens=400)
    await sample_library(env.runtime)
    nurse = await add_person(env.runtime, {"nurse"})
    settings = env.runtime.settings
    elsewhere = ChatService(env.runtime, LLMClient(llm_config(settings)),
                            open_shared_state(settings.redis_url, env.runtime.db, env.runtime.clock))
    try:
        model_asked = asyncio.Event()
        prompts_here = _record_prompts(env, asked=model_asked)
        asked = await env.chat.ask(nurse, QUESTION, None, CTX)
        early = (await _prepared(env, asked.answer_id)).early
        assert early is not None
        await asyncio.wait_for(model_asked.wait(), timeout=60)  # the first process has asked the model
        events = await asyncio.wait_for(collect(elsewhere.stream(nurse, asked.answer_id, CTX)), timeout=120)
        tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
        done = events[-1].answer
        assert tokens and done.status == "complete" and done.content == tokens
        await asyncio.sleep(0.6)
        assert len(env.chat.runner._early) == 0, "the early model request is not left running"
        assert len(prompts_here) == 1  # this process asked once, early, and never showed it
        answer = (await messages_of(env, asked.conversation_id))[-1]
        assert (answer.status, answer.content) == ("complete", tokens)
        async with env.runtime.db() as session:
            saved = (await session.execute(select(AuditEvent).where(AuditEvent.action == "chat.answer"))).scalars().all()
        assert len(saved) == 1, "only the stream that claimed the answer saved it"
    finally:
        await elsewhere.close()
