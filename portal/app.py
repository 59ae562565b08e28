"""The app factory: create_app(settings) builds the whole Litestar application from one settings object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.csrf import CSRFConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler, Middleware

from portal.assets import asset_path
from portal.logging import configure_logging
from portal.metrics import MetricsController, metrics_middleware
from portal.middleware import request_id_middleware
from portal.runtime import Runtime
from portal.settings import Settings
from portal.web.errors import http_exception_handler, internal_error_handler
from portal.web.health import HealthController
from portal.web.home import HomeController

# The repository's folders in a checkout or an editable install; portal/_assets/ in an installed wheel.
TEMPLATES_DIR = asset_path("templates")
STATIC_DIR = asset_path("static")

# Each area registers its routes and middleware here; see the area packages for what they hold.
AreaHook = Callable[[Settings], tuple[Sequence[ControllerRouterHandler], Sequence[Middleware]]]


def _area_hooks() -> list[AreaHook]:
    hooks: list[AreaHook] = []
    from portal.auth import register as register_auth

    hooks.append(register_auth)
    from portal.chat import register as register_chat

    hooks.append(register_chat)
    from portal.admin import register as register_admin

    hooks.append(register_admin)
    from portal.governance import register as register_governance

    hooks.append(register_governance)
    return hooks


def create_app(settings: Settings, *, configure_logs: bool = True) -> Litestar:
    if configure_logs:
        configure_logging()
    runtime = Runtime.create(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    def provide_runtime() -> Runtime:
        return runtime

    route_handlers: list[Any] = [
        HealthController,
        MetricsController,
        HomeController,
        create_static_files_router(path="/static", directories=[STATIC_DIR], name="static"),
    ]
    middleware: list[Any] = [request_id_middleware, metrics_middleware]
    for hook in _area_hooks():
        handlers, extra_middleware = hook(settings)
        route_handlers.extend(handlers)
        middleware.extend(extra_middleware)

    csrf = CSRFConfig(
        secret=settings.effective_secret_key,
        cookie_name="__Host-csrftoken" if settings.cookie_secure else "csrftoken",
        cookie_secure=settings.cookie_secure,
        cookie_httponly=False,  # htmx reads the token from the page, not the cookie; HttpOnly would not hurt
        cookie_samesite="lax",
        header_name="x-csrftoken",
        exclude=["/scim/v2", "/healthz", "/readyz", "/metrics"],
    )
    app = Litestar(
        route_handlers=route_handlers,
        middleware=middleware,
        dependencies={"runtime": Provide(provide_runtime, sync_to_thread=False)},
        lifespan=[lifespan],
        template_config=TemplateConfig(directory=TEMPLATES_DIR, engine=JinjaTemplateEngine),
        csrf_config=csrf,
        exception_handlers={HTTPException: http_exception_handler, Exception: internal_error_handler},
        debug=False,
        logging_config=None,
        openapi_config=None,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    return app
