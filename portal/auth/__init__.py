"""Sign-in through the organisation's identity provider (OIDC), server-side sessions, SCIM provisioning."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.types import ControllerRouterHandler, Middleware

from portal.settings import Settings


def register(settings: Settings) -> tuple[Sequence[ControllerRouterHandler], Sequence[Middleware]]:
    from portal.auth.controllers import AuthController
    from portal.auth.middleware import session_middleware
    from portal.auth.scim_controllers import scim_router

    handlers: list[ControllerRouterHandler] = [AuthController, scim_router()]
    return handlers, [session_middleware]
