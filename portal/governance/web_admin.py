"""Admin pages for governance: retention policies and document lifetimes, legal holds, people (records requests,
deletion, break-glass). Thin: parse the form, call a governance service, render or redirect."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.response import Redirect, Response, Template
from sqlalchemy import or_, select

from portal.access import requires_admin
from portal.db.engine import transaction
from portal.db.models import Collection, Conversation, User
from portal.governance import breakglass, holds, retention
from portal.governance.erasure import delete_user, finish_pending_erasures
from portal.governance.records import build_records_export
from portal.runtime import Runtime
from portal.web.context import audit_context


async def form_fields(request: Request) -> dict[str, str]:
    form = await request.form()
    return {key: str(value) for key, value in form.items() if isinstance(value, str)}


def _int_or_none(value: str, label: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ClientException(f"{label} must be a whole number.") from None


class GovernanceAdminController(Controller):
    path = "/governance"
    guards = [requires_admin]

    @get("/", name="governance:index")
    async def index(self) -> Template:
        return Template(template_name="governance/index.html.j2", context={})

    # Retention ---------------------------------------------------------------------------------------------
    @get("/retention", name="governance:retention")
    async def retention_page(self, request: Request, runtime: NamedDependency[Runtime]) -> Template:
        async with runtime.db() as session:
            policies = await retention.list_policies(session)
            collections = (await session.execute(select(Collection).order_by(Collection.name))).scalars().all()
        return Template(
            template_name="governance/retention.html.j2",
            context={"policies": policies, "collections": collections, "default_days": runtime.settings.default_retention_days,
                     "saved": request.query_params.get("saved")},
        )

    @post("/retention", name="governance:retention_save")
    async def retention_save(self, request: Request, runtime: NamedDependency[Runtime]) -> Redirect:
        form = await form_fields(request)
        days = _int_or_none(form.get("conversation_days", ""), "Days")
        if days is None:
            raise ClientException("Give the number of days (0 for zero retention).")
        try:
            async with transaction(runtime.db) as session:
                await retention.save_policy(
                    session, role=form.get("role", ""), conversation_days=days,
                    overrides_shorter=form.get("overrides_shorter") == "on",
                    allow_general_answers=form.get("allow_general_answers") == "on",
                    now=runtime.clock.now(), context=audit_context(request),
                )
        except retention.PolicyError as exc:
            raise ClientException(str(exc)) from None
        return Redirect("/governance/retention?saved=policy", status_code=303)

    @post("/retention/{role:str}/delete", name="governance:retention_delete")
    async def retention_delete(self, request: Request, role: str, runtime: NamedDependency[Runtime]) -> Redirect:
        try:
            async with transaction(runtime.db) as session:
                await retention.delete_policy(session, role=role, now=runtime.clock.now(), context=audit_context(request))
        except retention.PolicyError as exc:
            raise NotFoundException(str(exc)) from None
        return Redirect("/governance/retention?saved=deleted", status_code=303)

    @post("/collections/{collection_id:str}/ttl", name="governance:collection_ttl")
    async def collection_ttl(self, request: Request, collection_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        form = await form_fields(request)
        try:
            async with transaction(runtime.db) as session:
                await retention.set_collection_ttl(
                    session, collection_id=collection_id, days=_int_or_none(form.get("days", ""), "Days"),
                    now=runtime.clock.now(), context=audit_context(request),
                )
        except retention.PolicyError as exc:
            raise ClientException(str(exc)) from None
        return Redirect("/governance/retention?saved=collection", status_code=303)

    @post("/documents/{document_id:str}/expiry", name="governance:document_expiry")
    async def document_expiry(self, request: Request, document_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        form = await form_fields(request)
        raw = form.get("expires_on", "").strip()
        try:
            expires_at = datetime.combine(date.fromisoformat(raw), time.min, UTC) if raw else None
        except ValueError:
            raise ClientException("Write the expiry date as YYYY-MM-DD (or leave it empty for no expiry).") from None
        try:
            async with transaction(runtime.db) as session:
                await retention.set_document_expiry(session, document_id=document_id, expires_at=expires_at,
                                                    now=runtime.clock.now(), context=audit_context(request))
        except retention.PolicyError as exc:
            raise NotFoundException(str(exc)) from None
        return Redirect(request.headers.get("referer") or "/governance/retention?saved=document", status_code=303)

    # Legal holds -------------------------------------------------------------------------------------------
    @get("/holds", name="governance:holds")
    async def holds_page(self, request: Request, runtime: NamedDependency[Runtime]) -> Template:
        async with runtime.db() as session:
            active = await holds.list_holds(session)
        return Template(template_name="governance/holds.html.j2",
                        context={"holds": active, "saved": request.query_params.get("saved"),
                                 "subject_type": request.query_params.get("subject_type", "user"),
                                 "subject_id": request.query_params.get("subject_id", "")})

    @post("/holds", name="governance:hold_place")
    async def hold_place(self, request: Request, runtime: NamedDependency[Runtime]) -> Redirect:
        form = await form_fields(request)
        subject_type = form.get("subject_type", "")
        if subject_type not in ("user", "conversation"):
            raise ClientException("A hold is placed on a person or on a conversation.")
        try:
            async with transaction(runtime.db) as session:
                await holds.place_hold(
                    session, subject_type=subject_type,  # type: ignore[arg-type]
                    subject_id=form.get("subject_id", ""), reason=form.get("reason", ""),
                    case_reference=form.get("case_reference", ""), now=runtime.clock.now(), context=audit_context(request),
                )
        except holds.HoldError as exc:
            raise ClientException(str(exc)) from None
        return Redirect("/governance/holds?saved=placed", status_code=303)

    @post("/holds/{hold_id:str}/lift", name="governance:hold_lift")
    async def hold_lift(self, request: Request, hold_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        try:
            async with transaction(runtime.db) as session:
                await holds.lift_hold(session, hold_id=hold_id, now=runtime.clock.now(), context=audit_context(request))
        except holds.HoldError as exc:
            raise ClientException(str(exc)) from None
        return Redirect("/governance/holds?saved=lifted", status_code=303)

    # People: records requests, deletion, break-glass ---------------------------------------------------------
    @get("/people", name="governance:people")
    async def people(self, request: Request, runtime: NamedDependency[Runtime]) -> Template:
        query = request.query_params.get("q", "").strip()
        found: list[User] = []
        if query:
            pattern = f"%{query}%"
            async with runtime.db() as session:
                found = list((await session.execute(
                    select(User).where(or_(User.display_name.ilike(pattern), User.email.ilike(pattern), User.id == query))
                    .order_by(User.display_name).limit(50)
                )).scalars())
        return Template(template_name="governance/people.html.j2", context={"q": query, "people": found})

    @get("/people/{user_id:str}", name="governance:person")
    async def person(self, request: Request, user_id: str, runtime: NamedDependency[Runtime]) -> Template:
        async with runtime.db() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise NotFoundException("There is no such person.")
            summaries = await breakglass.conversation_summaries(session, user_id)
            now = runtime.clock.now()
            held = await holds.held_subjects(session, now)
            days = await retention.conversation_retention_days(
                session, [r.role for r in user.roles], default_days=runtime.settings.default_retention_days
            )
        return Template(template_name="governance/person.html.j2",
                        context={"person": user, "conversations": summaries, "held": held, "retention_days": days,
                                 "saved": request.query_params.get("saved")})

    @post("/people/{user_id:str}/records", name="governance:records_export", status_code=200)
    async def records_export(self, request: Request, user_id: str, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        try:
            async with transaction(runtime.db) as session:
                export = await build_records_export(session, user_id=user_id, actor=audit_context(request),
                                                    now=runtime.clock.now(), requested_by="admin")
        except LookupError as exc:
            raise NotFoundException(str(exc)) from None
        return zip_response(export.filename, export.content)

    @post("/people/{user_id:str}/delete", name="governance:person_delete")
    async def person_delete(self, request: Request, user_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        form = await form_fields(request)
        if form.get("confirm", "").strip() != user_id:
            raise ClientException("To delete a person, type their Enclave id into the confirmation box.")
        try:
            async with transaction(runtime.db) as session:
                result = await delete_user(session, user_id, audit_context(request), now=runtime.clock.now())
        except LookupError as exc:
            raise NotFoundException(str(exc)) from None
        await finish_pending_erasures(runtime.db, runtime.store, runtime.settings.files_path)
        if result.user_removed:
            return Redirect("/governance/people?deleted=1", status_code=303)
        return Redirect(f"/governance/people/{user_id}?saved=deleted_except_held", status_code=303)

    @get("/conversations/{conversation_id:str}/read", name="governance:breakglass_form")
    async def breakglass_form(self, conversation_id: str, runtime: NamedDependency[Runtime]) -> Template:
        async with runtime.db() as session:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None:
                raise NotFoundException("There is no such conversation.")
            owner = await session.get(User, conversation.user_id)
        return Template(template_name="governance/breakglass_form.html.j2",
                        context={"conversation_id": conversation_id, "owner": owner,
                                 "notify": runtime.settings.break_glass_notices, "min_chars": breakglass.MIN_REASON_CHARS})

    @post("/conversations/{conversation_id:str}/read", name="governance:breakglass_read", status_code=200)
    async def breakglass_read(self, request: Request, conversation_id: str, runtime: NamedDependency[Runtime]) -> Any:
        form = await form_fields(request)
        refused: str | None = None
        async with transaction(runtime.db) as session:
            try:
                read = await breakglass.break_glass_read(
                    session, conversation_id=conversation_id, reason=form.get("reason", ""),
                    actor=audit_context(request), now=runtime.clock.now(),
                    notify_owner=runtime.settings.break_glass_notices,
                )
            except LookupError as exc:
                raise NotFoundException(str(exc)) from None
            except breakglass.BreakGlassRefused as exc:
                refused = str(exc)  # the refusal's audit record commits with this transaction
        if refused is not None:
            raise ClientException(refused)
        return Template(template_name="governance/breakglass_read.html.j2",
                        context={"read": read, "reason": " ".join(form.get("reason", "").split())})


def zip_response(filename: str, content: bytes) -> Response[bytes]:
    return Response(
        content, media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
