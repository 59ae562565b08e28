"""Chat: grounded answers streamed from the on-prem LLM, with citations a person can check."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.types import ControllerRouterHandler, Middleware

from portal.settings import Settings


def register(settings: Settings) -> tuple[Sequence[ControllerRouterHandler], Sequence[Middleware]]:
    from portal.chat.wiring import chat_router

    return [chat_router(settings)], []
