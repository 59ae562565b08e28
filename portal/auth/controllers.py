"""Sign-in, callback, sign-out and the admin view of the role mapping in effect. Thin: the flow lives in services."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from portal.access import principal_of, requires_admin
from portal.audit import append_audit
from portal.auth.login_flow import (
    LOGIN_STATE_TTL,
    LoginFailed,
    audit_login_failure,
    begin_login,
    finish_login,
    safe_return_path,
)
from portal.auth.services import AuthServices, auth_services
from portal.auth.session_store import SessionRecord
from portal.auth.sessions import end_session
from portal.auth.users import load_rules
from portal.db.engine import transaction
from portal.runtime import Runtime
from portal.web.context import audit_context


def _services(request: Request[Any, Any, Any]) -> AuthServices:
    return auth_services(request.app)


def _cookie(services: AuthServices, name: str, value: str, max_age: int | None = None) -> Cookie:
    return Cookie(
        key=name, value=value, path="/", secure=services.cookie_secure, httponly=True, samesite="lax", max_age=max_age
    )


class AuthController(Controller):
    path = "/auth"

    @get("/login", name="auth:login")
    async def login(self, request: Request[Any, Any, Any], next: str | None = None) -> Template | Redirect:
        services = _services(request)
        providers = list(services.providers.values())
        if len(providers) == 1:
            query = urlencode({"next": safe_return_path(next)})
            return Redirect(f"/auth/login/{providers[0].name}?{query}")
        return Template(
            template_name="auth/login.html.j2",
            context={"providers": [p.config for p in providers], "next": safe_return_path(next)},
        )

    @get("/login/{provider_name:str}", name="auth:start")
    async def start(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], provider_name: str,
        next: str | None = None,
    ) -> Redirect:
        services = _services(request)
        try:
            started = await begin_login(services, provider_name, next)
        except LoginFailed as exc:
            await audit_login_failure(runtime.db, runtime.clock, audit_context(request), provider_name, exc.reason)
            raise HTTPException(status_code=exc.status, detail=exc.message) from exc
        redirect = Redirect(started.authorization_url)
        redirect.cookies.append(
            _cookie(services, services.login_cookie_name, started.browser_binding, int(LOGIN_STATE_TTL.total_seconds()))
        )
        return redirect

    @get("/callback/{provider_name:str}", name="auth:callback")
    async def callback(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], provider_name: str
    ) -> Redirect | Template:
        services = _services(request)
        params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        try:
            result, return_path = await finish_login(
                services, runtime.db, runtime.clock, provider_name=provider_name, params=params,
                browser_binding=request.cookies.get(services.login_cookie_name), context=audit_context(request),
            )
        except LoginFailed as exc:
            raise HTTPException(status_code=exc.status, detail=exc.message) from exc
        # Rotate: whatever session this browser had before is gone, signed in or not.
        old: SessionRecord | None = request.state.get("session_record")
        if old is not None:
            await end_session(services, old.id_hash)
        clear_login = _cookie(services, services.login_cookie_name, "", 0)
        if result.session_id is None:
            outcome = result.outcome
            page = Template(
                template_name="auth/refused.html.j2",
                context={
                    "reason": outcome.refused_reason,
                    "contact": runtime.settings.access_contact,
                    "display_name": outcome.display_name,
                },
                status_code=403,
            )
            page.cookies.append(clear_login)
            return page
        redirect = Redirect(return_path)
        redirect.cookies.extend([_cookie(services, services.cookie_name, result.session_id), clear_login])
        return redirect

    @post("/logout", name="auth:logout")
    async def logout(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Redirect:
        services = _services(request)
        record: SessionRecord | None = request.state.get("session_record")
        target = "/auth/signed-out"
        if record is not None:
            await end_session(services, record.id_hash)
            async with transaction(runtime.db) as session:
                await append_audit(
                    session, at=runtime.clock.now(), action="auth.logout", context=audit_context(request),
                    object_type="session", object_ids=[record.id_hash],
                )
            provider = services.providers.get(record.provider or "")
            if provider is not None:
                try:
                    meta = await provider.metadata()
                except Exception:  # noqa: BLE001 - the local sign-out already happened; skip the provider's
                    meta = None
                if meta is not None and meta.end_session_endpoint:
                    query = {
                        "client_id": provider.config.client_id,
                        "post_logout_redirect_uri": f"{runtime.settings.public_url.rstrip('/')}/auth/signed-out",
                    }
                    hint = record.data.get("id_token")
                    if isinstance(hint, str):
                        query["id_token_hint"] = hint
                    sep = "&" if "?" in meta.end_session_endpoint else "?"
                    target = f"{meta.end_session_endpoint}{sep}{urlencode(query)}"
        redirect = Redirect(target, status_code=303)
        redirect.cookies.append(_cookie(services, services.cookie_name, "", 0))
        return redirect

    @get("/signed-out", name="auth:signed_out")
    async def signed_out(self) -> Template:
        return Template(template_name="auth/signed_out.html.j2", context={})

    @get("/mapping", name="auth:mapping", guards=[requires_admin])
    async def mapping(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Template:
        """The rules in effect and what they give the signed-in admin's last claims (read-only)."""
        async with runtime.db() as session:
            rules = await load_rules(session)
        principal = principal_of(request)
        return Template(
            template_name="auth/mapping.html.j2",
            context={
                "rules": rules,
                "providers": [p.config for p in _services(request).providers.values()],
                "principal": principal,
            },
        )
