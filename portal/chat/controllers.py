"""Chat routes: thin handlers that parse the request, call the chat services and render the page or a fragment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.response import Redirect, Response, Stream, Template
from litestar.status_codes import HTTP_409_CONFLICT, HTTP_429_TOO_MANY_REQUESTS

from portal.access import require_principal, requires_login
from portal.chat import pages
from portal.chat.answering import AskResult, ChatService, QuestionRejected, RateLimited
from portal.chat.conversations import (
    HELD_MESSAGE,
    ChatNotFound,
    owned_message,
    rename_conversation,
    save_feedback,
)
from portal.chat.sse import sse_event, token_event
from portal.chat.turns import DoneEvent, SourcesEvent, TokenEvent
from portal.chat.views import passage_view
from portal.db.engine import transaction
from portal.governance.erasure import delete_conversation_and_files
from portal.governance.holds import HeldError
from portal.runtime import Runtime
from portal.web.context import audit_context
from portal.web.errors import wants_html

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: str(value) for key, value in form.items() if isinstance(value, str)}


def _notice_fragment(request: Request, text: str, status_code: int) -> Response[Any]:
    """htmx does not swap error responses: answer 200 and put the notice where the person is looking."""
    html = pages.render_block(request, "chat_notice", {"notice": text})
    return Response(html, media_type="text/html", headers={"HX-Retarget": "#chat-notice", "HX-Reswap": "innerHTML",
                                                           "X-Enclave-Status": str(status_code)})


class ChatController(Controller):
    path = "/chat"
    guards = [requires_login]

    @get("/", name="chat:index")
    async def index(self, request: Request, runtime: NamedDependency[Runtime], chat: NamedDependency[ChatService]) -> Template:
        return await pages.chat_page(request, runtime, chat, None)

    @get("/c/{conversation_id:str}", name="chat:conversation")
    async def conversation(
        self, request: Request, conversation_id: str, runtime: NamedDependency[Runtime], chat: NamedDependency[ChatService]
    ) -> Template:
        return await pages.chat_page(request, runtime, chat, conversation_id)

    @post("/ask", name="chat:ask", status_code=200)
    async def ask(self, request: Request, runtime: NamedDependency[Runtime], chat: NamedDependency[ChatService]) -> Any:
        principal = require_principal(request)
        form = await _form(request)
        context = audit_context(request)
        try:
            asked = await chat.ask(principal, form.get("question", ""), form.get("conversation_id") or None, context)
        except RateLimited as exc:
            if _is_htmx(request):
                return _notice_fragment(request, str(exc), HTTP_429_TOO_MANY_REQUESTS)
            raise HTTPException(status_code=HTTP_429_TOO_MANY_REQUESTS, detail=str(exc),
                                headers={"Retry-After": str(exc.retry_after_s)}) from None
        except QuestionRejected as exc:
            if _is_htmx(request):
                return _notice_fragment(request, str(exc), 400)
            raise ClientException(str(exc)) from None
        except ChatNotFound as exc:
            raise NotFoundException(str(exc)) from None
        if not wants_html(request):
            return Response({"answer_id": asked.answer_id, "conversation_id": asked.conversation_id,
                             "stream_url": asked.stream_url}, status_code=201)
        if _is_htmx(request):
            return await self._exchange_fragment(request, runtime, asked, form.get("question", ""))
        # Without JavaScript: answer in this request and show the whole page.
        answer = await chat.answer_whole(principal, asked.answer_id, context)
        if asked.ephemeral:
            return await pages.chat_page(request, runtime, chat, None, ephemeral_exchange=(form["question"].strip(), answer))
        return Redirect(f"/chat/c/{asked.conversation_id}#answer-{asked.answer_id}", status_code=303)

    async def _exchange_fragment(self, request: Request, runtime: Runtime, asked: AskResult, question: str) -> Response[Any]:
        html = pages.render_block(request, "exchange", pages.pending_exchange(asked, question.strip()))
        headers: dict[str, str] = {}
        if asked.conversation_id:
            html += pages.render_block(request, "conversation_field", {"conversation_id": asked.conversation_id,
                                                                        "oob": True})
            headers["HX-Push-Url"] = f"/chat/c/{asked.conversation_id}"
        return Response(html, media_type="text/html", headers=headers)

    @get("/stream/{answer_id:str}", name="chat:stream")
    async def stream(self, request: Request, answer_id: str, chat: NamedDependency[ChatService]) -> Stream:
        principal = require_principal(request)
        context = audit_context(request)
        events = chat.stream(principal, answer_id, context)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for event in events:
                    if isinstance(event, TokenEvent):
                        yield token_event(event.text)
                    elif isinstance(event, SourcesEvent):
                        yield sse_event("sources", pages.render_block(request, "sources", {"sources": event.sources}))
                    elif isinstance(event, DoneEvent):
                        yield sse_event("done", pages.render_block(request, "answer", pages.answer_context(event.answer)))
            except ChatNotFound as exc:
                yield sse_event("done", pages.render_block(request, "chat_notice", {"notice": str(exc)}))
            finally:
                await events.aclose()

        return Stream(body(), media_type="text/event-stream", headers=SSE_HEADERS)

    @post("/messages/{answer_id:str}/stop", name="chat:stop")
    async def stop(self, request: Request, answer_id: str, chat: NamedDependency[ChatService]) -> Any:
        try:
            await chat.request_stop(require_principal(request), answer_id)
        except ChatNotFound as exc:
            raise NotFoundException(str(exc)) from None
        if _is_htmx(request) or not wants_html(request):
            return Response(b"", status_code=204)
        return Redirect(request.headers.get("referer") or "/chat", status_code=303)

    @post("/messages/{answer_id:str}/retry", name="chat:retry", status_code=200)
    async def retry(self, request: Request, answer_id: str, chat: NamedDependency[ChatService]) -> Any:
        principal = require_principal(request)
        context = audit_context(request)
        try:
            await chat.retry(principal, answer_id, context)
        except ChatNotFound as exc:
            raise NotFoundException(str(exc)) from None
        except QuestionRejected as exc:
            raise ClientException(str(exc)) from None
        if _is_htmx(request):
            return Response(pages.render_block(request, "answer", pages.pending_answer(answer_id)), media_type="text/html")
        answer = await chat.answer_whole(principal, answer_id, context)
        async with chat.runtime.db() as session:
            _message, conversation = await owned_message(session, principal.user_id, answer.answer_id)
        return Redirect(f"/chat/c/{conversation.id}#answer-{answer_id}", status_code=303)

    @post("/messages/{answer_id:str}/feedback", name="chat:feedback", status_code=200)
    async def feedback(self, request: Request, answer_id: str, runtime: NamedDependency[Runtime]) -> Any:
        principal = require_principal(request)
        form = await _form(request)
        rating = {"1": 1, "-1": -1, "up": 1, "down": -1}.get(form.get("rating", ""), 0)
        try:
            async with transaction(runtime.db) as session:
                saved = await save_feedback(session, principal, answer_id, rating, form.get("comment", ""),
                                            runtime.clock.now(), audit_context(request))
                _message, conversation = await owned_message(session, principal.user_id, answer_id)
        except ChatNotFound as exc:
            raise NotFoundException(str(exc)) from None
        except ValueError as exc:
            raise ClientException(str(exc)) from None
        conversation_id = conversation.id
        if _is_htmx(request):
            return Response(pages.render_block(request, "feedback", {"answer": pages.FeedbackState(answer_id, saved.rating,
                                                                     saved.comment, saved=True)}), media_type="text/html")
        return Redirect(f"/chat/c/{conversation_id}#answer-{answer_id}", status_code=303)

    @post("/c/{conversation_id:str}/rename", name="chat:rename")
    async def rename(self, request: Request, conversation_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        form = await _form(request)
        try:
            async with transaction(runtime.db) as session:
                await rename_conversation(session, require_principal(request), conversation_id, form.get("title", ""),
                                          runtime.clock.now())
        except ChatNotFound as exc:
            raise NotFoundException(str(exc)) from None
        except ValueError as exc:
            raise ClientException(str(exc)) from None
        return Redirect(f"/chat/c/{conversation_id}", status_code=303)

    @post("/c/{conversation_id:str}/delete", name="chat:delete")
    async def delete(self, request: Request, conversation_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        """The same deletion as every other path (portal.governance.erasure): rows, cached entries, attachments and
        their files and vectors; refused (and audited) under legal hold."""
        require_principal(request)
        try:
            await delete_conversation_and_files(runtime.db, runtime.store, runtime.settings.files_path, conversation_id,
                                                audit_context(request), now=runtime.clock.now())
        except HeldError:
            raise HTTPException(status_code=HTTP_409_CONFLICT, detail=HELD_MESSAGE) from None
        except LookupError:
            raise NotFoundException("That conversation does not exist, or it is not yours.") from None
        return Redirect("/chat?deleted=1", status_code=303)

    @get("/search", name="chat:search")
    async def search(self, request: Request, runtime: NamedDependency[Runtime], chat: NamedDependency[ChatService],
                     q: str = "") -> Template:
        return await pages.chat_page(request, runtime, chat, None, search_query=q)

    @get("/passages/{chunk_id:str}", name="chat:passage")
    async def passage(self, request: Request, chunk_id: str, runtime: NamedDependency[Runtime]) -> Template:
        principal = require_principal(request)
        async with runtime.db() as session:
            view = await passage_view(session, principal, chunk_id, runtime.clock.now())
        if view is None:
            # Same answer for "no such passage" and "not yours to read": existence is not revealed.
            raise NotFoundException("That passage does not exist, or you do not have access to it.")
        return Template(template_name="chat/passage.html.j2", context={"passage": view,
                                                                        "back": request.headers.get("referer")})

