"""ASGI middleware: turn the session cookie into request.state.principal on every request (None when signed out)."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from portal.audit import AuditContext
from portal.auth.services import auth_services
from portal.auth.sessions import resolve_session
from portal.auth.users import install_configured_rules
from portal.db.engine import transaction
from portal.runtime import Runtime

# Paths that never need to know who is asking (and must stay cheap).
_ANONYMOUS_PREFIXES = ("/static/", "/healthz", "/readyz", "/metrics", "/scim/")


def clear_cookie_header(name: str, secure: bool) -> bytes:
    parts = [f"{name}=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            if name in jar:
                return jar[name].value
    return None


async def _install_configured_rules(runtime: Runtime) -> None:
    if runtime.settings.role_rules:
        async with transaction(runtime.db) as session:
            await install_configured_rules(session, runtime.settings.role_rules)


def session_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(_ANONYMOUS_PREFIXES):
            await app(scope, receive, send)
            return
        litestar_app = scope["app"]
        services = auth_services(litestar_app)
        if not services.configured_rules_installed:
            await _install_configured_rules(litestar_app.state.runtime)
            services.configured_rules_installed = True
        state = scope.setdefault("state", {})
        state["principal"] = None
        session_id = _cookie(scope, services.cookie_name)
        clear = False
        if session_id:
            runtime = litestar_app.state.runtime
            client = scope.get("client")
            context = AuditContext(client_addr=client[0] if client else None, request_id=state.get("request_id"))
            resolution = await resolve_session(services, runtime.db, runtime.clock, session_id, context)
            state["principal"] = resolution.principal
            state["session_record"] = resolution.record
            clear = resolution.clear_cookie

        if not clear:
            await app(scope, receive, send)
            return

        async def send_clearing_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                prefix = services.cookie_name.encode() + b"="
                # A response that sets a new session (a sign-in) must not be followed by our clearing header.
                if not any(k.lower() == b"set-cookie" and v.startswith(prefix) for k, v in headers):
                    headers.append((b"set-cookie", clear_cookie_header(services.cookie_name, services.cookie_secure)))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_clearing_cookie)

    return middleware
