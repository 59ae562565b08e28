"""The auth area's per-application parts: provider clients, the session store and the login-state store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from litestar import Litestar

from portal.auth.oidc import OIDCProvider
from portal.auth.providers import effective_providers, redirect_uri
from portal.auth.session_store import (
    DatabaseKeyValueStore,
    DatabaseSessionStore,
    KeyValueStore,
    RedisKeyValueStore,
    RedisSessionStore,
    SessionStore,
)
from portal.runtime import Runtime


@dataclass
class AuthServices:
    providers: dict[str, OIDCProvider]
    sessions: SessionStore
    login_state: KeyValueStore
    idle_timeout: timedelta
    absolute_lifetime: timedelta
    cookie_name: str
    cookie_secure: bool
    redis: Any = None
    configured_rules_installed: bool = False

    @property
    def login_cookie_name(self) -> str:
        return "__Host-enclave_login" if self.cookie_secure else "enclave_login"


def build_auth_services(runtime: Runtime) -> AuthServices:
    settings = runtime.settings
    absolute = timedelta(hours=settings.session_absolute_hours)
    redis: Any = None
    sessions: SessionStore
    login_state: KeyValueStore
    if settings.redis_url:
        from portal.redis_client import redis_client

        redis = redis_client(settings.redis_url)
        sessions = RedisSessionStore(redis, absolute)
        login_state = RedisKeyValueStore(redis)
    else:
        sessions = DatabaseSessionStore(runtime.db)
        login_state = DatabaseKeyValueStore(runtime.db, runtime.clock)
    return AuthServices(
        providers={
            p.name: OIDCProvider(p, redirect_uri(settings, p.name)) for p in effective_providers(settings)
        },
        sessions=sessions,
        login_state=login_state,
        idle_timeout=timedelta(minutes=settings.session_idle_minutes),
        absolute_lifetime=absolute,
        cookie_name="__Host-enclave_session" if settings.cookie_secure else "enclave_session",
        cookie_secure=settings.cookie_secure,
        redis=redis,
    )


def auth_services(app: Litestar) -> AuthServices:
    """Built on first use and kept on app.state: one set per application (tests build many apps)."""
    services = app.state.get("auth_services")
    if services is None:
        services = build_auth_services(app.state.runtime)
        app.state.auth_services = services
        if services.redis is not None:
            app.on_shutdown.append(services.redis.aclose)
    return services
