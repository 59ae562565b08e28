"""Admin pages for people (roles from SSO, last sign-in, status, deactivate) and the claim -> role mapping rules."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency

from portal.access import requires_admin, requires_login
from portal.admin import people
from portal.admin.errors import AdminError
from portal.admin.web import AnyRequest, actor_of, form_fields, json_or_redirect, page, refusal_for_api, wants_json
from portal.auth.services import auth_services
from portal.auth.sessions import end_user_sessions
from portal.runtime import Runtime

SAMPLE_CLAIMS = '{"email": "noah.nurse@example.org", "groups": ["nurses", "staff"]}'


class PeopleController(Controller):
    path = "/admin/people"
    # Pages need an admin; actions reach their service, which refuses non-admins AND audits the refusal.
    guards = [requires_login]

    async def _people(self, request: AnyRequest, runtime: Runtime, q: str = "", *, error: str | None = None,
                      notice: str | None = None, status_code: int = 200) -> Any:
        async with runtime.db() as session:
            rows = await people.list_people(session, q)
        if wants_json(request):
            return Response({"people": [
                {"id": r.user.id, "email": r.user.email, "name": r.user.display_name, "status": r.user.status,
                 "roles": [role for role, _ in r.roles],
                 "last_login_at": r.user.last_login_at.isoformat() if r.user.last_login_at else None}
                for r in rows]}, status_code=status_code)
        return page("admin/people.html.j2", {"rows": rows, "q": q, "error": error, "notice": notice}, status_code)

    @get("/", name="admin:people", guards=[requires_admin])
    async def index(self, request: AnyRequest, runtime: NamedDependency[Runtime], q: str = "") -> Any:
        return await self._people(request, runtime, q)

    async def _set_active(self, request: AnyRequest, runtime: Runtime, user_id: str, active: bool) -> Any:
        services = auth_services(request.app)

        async def end_sessions(uid: str) -> int:
            return await end_user_sessions(services, uid)

        try:
            ended = await people.set_active(runtime, actor_of(request), user_id, active=active, end_sessions=end_sessions)
        except AdminError as exc:
            refusal_for_api(request, exc)
            return await self._people(request, runtime, error=exc.message, status_code=exc.status_code)
        if wants_json(request):
            return Response({"id": user_id, "status": "active" if active else "deactivated", "sessions_ended": ended},
                            status_code=200)
        notice = "Reactivated." if active else f"Deactivated; {ended} session(s) ended at once."
        return await self._people(request, runtime, notice=notice)

    @post("/{user_id:str}/deactivate", name="admin:person_deactivate")
    async def deactivate(self, request: AnyRequest, runtime: NamedDependency[Runtime], user_id: str) -> Any:
        return await self._set_active(request, runtime, user_id, False)

    @post("/{user_id:str}/reactivate", name="admin:person_reactivate")
    async def reactivate(self, request: AnyRequest, runtime: NamedDependency[Runtime], user_id: str) -> Any:
        return await self._set_active(request, runtime, user_id, True)

    async def _rules(self, request: AnyRequest, runtime: Runtime, *, error: str | None = None, notice: str | None = None,
                     status_code: int = 200, preview: Any = None, claims: str = SAMPLE_CLAIMS, provider: str = "",
                     form: dict[str, str] | None = None) -> Any:
        async with runtime.db() as session:
            rules = await people.list_rules(session)
        if wants_json(request):
            body: dict[str, Any] = {"rules": [{"id": r.id, "claim": r.claim, "match": r.match, "value": r.value,
                                                "role": r.role, "effect": r.effect, "provider": r.provider} for r in rules]}
            if preview is not None:
                body["preview"] = {"roles": sorted(preview.roles), "refused": preview.refused, "denied": preview.denied}
            return Response(body, status_code=status_code)
        return page("admin/rules.html.j2", {
            "rules": rules, "error": error, "notice": notice, "preview": preview, "claims": claims,
            "provider": provider, "form": form or {}, "matches": people.MATCHES, "effects": people.EFFECTS,
        }, status_code)

    @get("/rules", name="admin:rules", guards=[requires_admin])
    async def rules(self, request: AnyRequest, runtime: NamedDependency[Runtime]) -> Any:
        return await self._rules(request, runtime)

    @post("/rules", name="admin:rule_add")
    async def add_rule(self, request: AnyRequest, runtime: NamedDependency[Runtime]) -> Any:
        fields = await form_fields(request)
        try:
            rule_id = await people.add_rule(runtime, actor_of(request), fields)
        except AdminError as exc:
            refusal_for_api(request, exc)
            return await self._rules(request, runtime, error=exc.message, status_code=exc.status_code, form=fields)
        return json_or_redirect(request, "/admin/people/rules", {"id": rule_id}, 201)

    @post("/rules/{rule_id:str}/delete", name="admin:rule_delete")
    async def delete_rule(self, request: AnyRequest, runtime: NamedDependency[Runtime], rule_id: str) -> Any:
        try:
            await people.delete_rule(runtime, actor_of(request), rule_id)
        except AdminError as exc:
            refusal_for_api(request, exc)
            return await self._rules(request, runtime, error=exc.message, status_code=exc.status_code)
        return json_or_redirect(request, "/admin/people/rules", {"deleted": rule_id})

    @post("/rules/preview", name="admin:rule_preview", guards=[requires_admin])
    async def preview(self, request: AnyRequest, runtime: NamedDependency[Runtime]) -> Any:
        fields = await form_fields(request)
        claims, provider = fields.get("claims", ""), fields.get("provider", "")
        try:
            result = await people.preview_mapping(runtime, claims, provider)
        except AdminError as exc:
            refusal_for_api(request, exc)
            return await self._rules(request, runtime, error=exc.message, status_code=exc.status_code, claims=claims,
                                     provider=provider)
        return await self._rules(request, runtime, preview=result, claims=claims, provider=provider)
