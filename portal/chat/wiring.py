"""How chat plugs into the app: one ChatService per app, given to handlers as the `chat` dependency."""

from __future__ import annotations

from litestar import Request, Router
from litestar.di import Provide

from portal.chat.answering import ChatService
from portal.chat.controllers import ChatController
from portal.chat.shared_state import open_shared_state
from portal.settings import Settings
from rag.llm import LLMClient, LLMConfig


def llm_config(settings: Settings) -> LLMConfig:
    return LLMConfig(
        base_url=settings.effective_llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value(),
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
        context_window=settings.llm_context_window,
    )


def chat_router(settings: Settings) -> Router:
    def provide_chat(request: Request) -> ChatService:
        # Made on first use inside the running loop: its HTTP pools belong to that loop.
        app = request.app
        service = app.state.get("chat_service")
        if service is None:
            runtime = app.state.runtime
            state = open_shared_state(settings.redis_url, runtime.db, runtime.clock)
            service = ChatService(runtime, LLMClient(llm_config(settings)), state)
            app.state.chat_service = service
            app.on_shutdown.append(service.close)
        return service

    return Router(
        path="/",
        route_handlers=[ChatController],
        dependencies={"chat": Provide(provide_chat, sync_to_thread=False)},
        signature_namespace={"ChatService": ChatService},
    )
