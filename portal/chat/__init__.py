"""Chat: grounded answers streamed from the on-prem LLM, with citations a person can check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request, Router
from litestar.di import Provide
from litestar.types import ControllerRouterHandler, Middleware

from portal.settings import Settings
from rag.llm import LLMConfig


def llm_config(settings: Settings) -> LLMConfig:
    return LLMConfig(
        base_url=settings.effective_llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
        context_window=settings.llm_context_window,
    )


def register(settings: Settings) -> tuple[Sequence[ControllerRouterHandler], Sequence[Middleware]]:
    from portal.chat.answering import ChatService
    from portal.chat.controllers import ChatController
    from portal.chat.shared_state import open_shared_state
    from rag.llm import LLMClient

    def provide_chat(request: Request) -> Any:  # ChatService; Litestar resolves annotations in module globals
        # One service per app, made on first use inside the running loop (its HTTP pools belong to that loop).
        app = request.app
        service = app.state.get("chat_service")
        if service is None:
            runtime = app.state.runtime
            state = open_shared_state(settings.redis_url, runtime.db, runtime.clock)
            service = ChatService(runtime, LLMClient(llm_config(settings)), state)
            app.state.chat_service = service
            app.on_shutdown.append(service.close)
        return service

    router = Router(path="/", route_handlers=[ChatController],
                    dependencies={"chat": Provide(provide_chat, sync_to_thread=False)})
    return [router], []
