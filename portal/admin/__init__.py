"""The admin area: collections, documents, people and usage, for administrators and collection managers."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.types import ControllerRouterHandler, Middleware

from portal.settings import Settings


def register(settings: Settings) -> tuple[Sequence[ControllerRouterHandler], Sequence[Middleware]]:
    from portal.admin.controllers import admin_route_handlers

    return admin_route_handlers(settings), []
