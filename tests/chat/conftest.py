"""Chat test fixtures: a started Runtime (real database, vector store and embedder) and the chat service on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from portal.chat.answering import ChatService
from portal.chat.shared_state import open_shared_state
from portal.chat.wiring import llm_config
from portal.runtime import Runtime
from rag.llm import LLMClient


@dataclass
class ChatEnv:
    runtime: Runtime
    chat: ChatService


MakeChatEnv = Callable[..., Awaitable[ChatEnv]]


@pytest.fixture
async def make_chat_env(
    request: pytest.FixtureRequest, database_url: str, settings_factory: Any
) -> AsyncIterator[MakeChatEnv]:
    """Build a chat environment; the real llama.cpp server is used unless `llm_base_url` is given."""
    made: list[ChatEnv] = []

    async def make(**overrides: Any) -> ChatEnv:
        if "llm_base_url" not in overrides:
            overrides["llm_base_url"] = request.getfixturevalue("llm_server").base_url
        values: dict[str, Any] = {"database_url": database_url, "llm_max_tokens": 64, "llm_context_window": 4096}
        values.update(overrides)
        settings = settings_factory(**values)
        runtime = Runtime.create(settings)
        await runtime.start()
        await runtime.wait_for_embedder()
        state = open_shared_state(settings.redis_url, runtime.db, runtime.clock)
        env = ChatEnv(runtime, ChatService(runtime, LLMClient(llm_config(settings)), state))
        made.append(env)
        return env

    yield make
    for env in made:
        await env.chat.close()
        await env.runtime.stop()
