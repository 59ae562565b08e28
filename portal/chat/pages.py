"""Building the chat page and its fragments. Fragments are blocks of templates/chat/page.html.j2, so a fragment
and the page it belongs to cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from litestar import Request
from litestar.exceptions import NotFoundException
from litestar.response import Template

from portal.access import require_principal
from portal.chat.answering import AskResult, ChatService
from portal.chat.conversations import (
    ChatNotFound,
    citations_by_message,
    conversation_messages,
    feedback_by_message,
    list_conversations,
    owned_conversation,
    search_history,
)
from portal.chat.views import AnswerView, ReadableDocuments, stored_answer_view
from portal.runtime import Runtime
from portal.web.context import audit_context

PAGE = "chat/page.html.j2"


@dataclass(frozen=True)
class FeedbackState:
    answer_id: str
    feedback_rating: int | None
    feedback_comment: str
    saved: bool = False
    ephemeral: bool = False
    status: str = "complete"


def render_block(request: Request, block: str, context: dict[str, Any]) -> str:
    """Render one block of the chat page on its own (an htmx fragment or an SSE event's HTML)."""
    environment: Environment = request.app.template_engine.engine  # type: ignore[union-attr]
    template = environment.get_template(PAGE)
    ctx = template.new_context({"request": request, **context})
    return "".join(template.blocks[block](ctx))


def answer_context(answer: AnswerView) -> dict[str, Any]:
    return {"answer": answer}


def pending_answer(answer_id: str, ephemeral: bool = False) -> dict[str, Any]:
    return answer_context(
        AnswerView(answer_id=answer_id, status="pending", stream_url=f"/chat/stream/{answer_id}", ephemeral=ephemeral)
    )


def pending_exchange(asked: AskResult, question: str) -> dict[str, Any]:
    return {"question": question, **pending_answer(asked.answer_id, asked.ephemeral)}


async def chat_page(
    request: Request,
    runtime: Runtime,
    chat: ChatService,
    conversation_id: str | None,
    *,
    search_query: str | None = None,
    ephemeral_exchange: tuple[str, AnswerView] | None = None,
) -> Template:
    principal = require_principal(request)
    policy = await chat.policy_for(principal)
    if conversation_id:
        try:
            await chat.end_interrupted_answers(principal, conversation_id, audit_context(request))
        except ChatNotFound as exc:
            raise NotFoundException(str(exc)) from None
    now = runtime.clock.now()
    exchanges: list[tuple[str, AnswerView]] = []
    conversation = None
    async with runtime.db() as session:
        conversations = [] if policy.zero_retention else await list_conversations(session, principal.user_id)
        if conversation_id:
            try:
                conversation = await owned_conversation(session, principal.user_id, conversation_id)
            except ChatNotFound as exc:
                raise NotFoundException(str(exc)) from None
            messages = await conversation_messages(session, conversation.id)
            answer_ids = [m.id for m in messages if m.role == "assistant"]
            citations = await citations_by_message(session, answer_ids)
            feedback = await feedback_by_message(session, principal.user_id, answer_ids)
            readable = ReadableDocuments(session, principal, now)
            question = ""
            for message in messages:
                if message.role == "user":
                    question = message.content
                    continue
                view = await stored_answer_view(session, readable, message, citations[message.id], feedback.get(message.id))
                exchanges.append((question, view))
        matches = await search_history(session, principal.user_id, search_query) if search_query else None
    if ephemeral_exchange:
        exchanges.append(ephemeral_exchange)
    return Template(
        template_name=PAGE,
        context={
            "conversation": conversation,
            "conversations": conversations,
            "exchanges": exchanges,
            "zero_retention": policy.zero_retention,
            "search_query": search_query,
            "matches": matches,
            "deleted": request.query_params.get("deleted") == "1",
        },
    )
