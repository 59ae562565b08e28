"""Admin pages for collections: the overview, one collection (details, readers, managers, documents), deletion."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException

from portal.access import ADMIN_ROLE, can_manage_collection, requires_login
from portal.admin import collections, documents, views
from portal.admin.errors import AdminError
from portal.admin.web import (
    AnyRequest,
    actor_of,
    form_fields,
    is_htmx,
    json_or_redirect,
    page,
    refusal_for_api,
    render_block,
    uploaded_files,
    wants_json,
)
from portal.runtime import Runtime

COLLECTION_TEMPLATE = "admin/collection.html.j2"


def _summary_json(summary: views.CollectionSummary) -> dict[str, Any]:
    c = summary.collection
    return {"id": c.id, "name": c.name, "description": c.description, "readers": summary.readers,
            "documents": summary.documents, "indexed": summary.indexed, "in_progress": summary.in_flight,
            "failed": summary.failed}


def _document_json(d: Any) -> dict[str, Any]:
    return {"id": d.id, "filename": d.filename, "title": d.title, "status": d.status, "progress": d.progress,
            "error": d.error, "version": d.version, "chunk_count": d.chunk_count, "size_bytes": d.size_bytes}


class CollectionsController(Controller):
    path = "/admin"
    guards = [requires_login]

    async def _index(
        self, request: AnyRequest, runtime: Runtime, *, error: str | None = None, notice: str | None = None,
        status_code: int = 200, form: dict[str, str] | None = None,
    ) -> Any:
        principal = actor_of(request).principal
        async with runtime.db() as session:
            summaries = await views.collection_summaries(session, principal)
        if not summaries and ADMIN_ROLE not in principal.roles:
            raise PermissionDeniedException("Only administrators and collection managers may open the admin pages.")
        if wants_json(request):
            return Response({"collections": [_summary_json(s) for s in summaries]}, status_code=status_code)
        return page("admin/index.html.j2", {"summaries": summaries, "error": error, "notice": notice,
                                            "form": form or {}, "is_admin": ADMIN_ROLE in principal.roles}, status_code)

    @get("/", name="admin:index")
    async def index(self, request: AnyRequest, runtime: NamedDependency[Runtime]) -> Any:
        return await self._index(request, runtime)

    @post("/collections", name="admin:collection_create")
    async def create(self, request: AnyRequest, runtime: NamedDependency[Runtime]) -> Any:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        readers = [r for r in form.getall("readers") if isinstance(r, str)] if "readers" in form else []
        readers += [r.strip() for r in fields.get("more_readers", "").split(",") if r.strip()]
        try:
            collection_id = await collections.create_collection(
                runtime, actor_of(request), fields.get("name", ""), fields.get("description", ""), readers
            )
        except AdminError as exc:
            refusal_for_api(request, exc)
            return await self._index(request, runtime, error=exc.message, status_code=exc.status_code, form=fields)
        return json_or_redirect(request, f"/admin/collections/{collection_id}", {"id": collection_id}, 201)

    async def _collection(
        self, request: AnyRequest, runtime: Runtime, collection_id: str, *, error: str | None = None,
        notice: str | None = None, status_code: int = 200,
    ) -> Any:
        actor = actor_of(request)
        async with runtime.db() as session:
            if not await can_manage_collection(session, actor.principal, collection_id):
                raise PermissionDeniedException("You do not manage this collection.")
            data = await views.collection_page(session, collection_id)
        if data is None:
            raise NotFoundException("That collection does not exist.")
        if wants_json(request):
            c = data.collection
            return Response({"id": c.id, "name": c.name, "description": c.description, "readers": data.readers,
                             "documents": [_document_json(d) for d in data.documents]}, status_code=status_code)
        context = {"data": data, "error": error, "notice": notice, "is_admin": actor.is_admin,
                   "max_upload_mb": runtime.settings.max_upload_mb}
        return page(COLLECTION_TEMPLATE, context, status_code)

    async def _refused(self, request: AnyRequest, runtime: Runtime, collection_id: str, exc: AdminError) -> Any:
        """An API client gets the refusal as its 4xx; a person sees the collection page again, the reason on it."""
        refusal_for_api(request, exc)
        return await self._collection(request, runtime, collection_id, error=exc.message, status_code=exc.status_code)

    @get("/collections/{collection_id:str}", name="admin:collection")
    async def collection(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        return await self._collection(request, runtime, collection_id)

    @get("/collections/{collection_id:str}/documents", name="admin:collection_documents")
    async def documents_fragment(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        """The documents table with live status: htmx polls this block while anything is being indexed."""
        if not is_htmx(request):
            return await self._collection(request, runtime, collection_id)
        async with runtime.db() as session:
            if not await can_manage_collection(session, actor_of(request).principal, collection_id):
                raise PermissionDeniedException("You do not manage this collection.")
            data = await views.collection_page(session, collection_id)
        if data is None:
            raise NotFoundException("That collection does not exist.")
        return render_block(request, COLLECTION_TEMPLATE, "documents", {"data": data})

    @post("/collections/{collection_id:str}", name="admin:collection_update")
    async def update(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        fields = await form_fields(request)
        try:
            await collections.update_collection(
                runtime, actor_of(request), collection_id, fields.get("name", ""), fields.get("description", "")
            )
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        return json_or_redirect(request, f"/admin/collections/{collection_id}", {"id": collection_id})

    @post("/collections/{collection_id:str}/delete", name="admin:collection_delete")
    async def delete(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        try:
            report = await collections.delete_collection(runtime, actor_of(request), collection_id)
        except AdminError as exc:
            refusal_for_api(request, exc)
            if exc.status_code in (403, 404):
                raise PermissionDeniedException(exc.message) if exc.status_code == 403 else NotFoundException(exc.message) from None
            return await self._collection(request, runtime, collection_id, error=exc.message, status_code=exc.status_code)
        if wants_json(request):
            return Response({"deleted": report.name, "documents": report.documents, "chunks": report.chunks,
                             "vectors": report.vectors, "files": report.files, "vectors_left": report.vectors_left},
                            status_code=200)
        notice = (
            f"Deleted “{report.name}”: {report.documents} document(s), {report.files} stored file(s) and "
            f"{report.vectors} vector(s) removed; {report.vectors_left} vector(s) left."
        )
        return await self._index(request, runtime, notice=notice)

    @post("/collections/{collection_id:str}/readers", name="admin:collection_grant")
    async def grant(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        fields = await form_fields(request)
        try:
            await collections.grant_read(runtime, actor_of(request), collection_id, fields.get("role", ""))
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        return json_or_redirect(request, f"/admin/collections/{collection_id}", {"granted": fields.get("role", "")})

    @post("/collections/{collection_id:str}/readers/{role:str}/revoke", name="admin:collection_revoke")
    async def revoke(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str, role: str) -> Any:
        try:
            await collections.revoke_read(runtime, actor_of(request), collection_id, role)
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        return json_or_redirect(request, f"/admin/collections/{collection_id}", {"revoked": role})

    @post("/collections/{collection_id:str}/managers", name="admin:manager_add")
    async def add_manager(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        fields = await form_fields(request)
        try:
            manager_id = await collections.add_manager(
                runtime, actor_of(request), collection_id, role=fields.get("role", ""), email=fields.get("email", "")
            )
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        return json_or_redirect(request, f"/admin/collections/{collection_id}", {"id": manager_id}, 201)

    @post("/collections/{collection_id:str}/managers/{manager_id:str}/remove", name="admin:manager_remove")
    async def remove_manager(
        self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str, manager_id: str
    ) -> Any:
        try:
            await collections.remove_manager(runtime, actor_of(request), collection_id, manager_id)
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        return json_or_redirect(request, f"/admin/collections/{collection_id}", {"removed": manager_id})

    @post("/collections/{collection_id:str}/upload", name="admin:upload")
    async def upload(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        try:
            files = await uploaded_files(request)
            result = await documents.upload_documents(runtime, actor_of(request), collection_id, files)
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        if wants_json(request):
            return Response({"created": result.created, "unchanged": result.unchanged, "jobs": result.job_ids}, status_code=202)
        parts = [f"{len(result.created)} file(s) queued for indexing."]
        if result.unchanged:
            parts.append(f"Already in this collection, skipped: {', '.join(result.unchanged)}.")
        return await self._collection(request, runtime, collection_id, notice=" ".join(parts), status_code=200)

    @post("/collections/{collection_id:str}/reindex", name="admin:collection_reindex")
    async def reindex(self, request: AnyRequest, runtime: NamedDependency[Runtime], collection_id: str) -> Any:
        try:
            job_ids = await documents.reindex_collection(runtime, actor_of(request), collection_id)
        except AdminError as exc:
            return await self._refused(request, runtime, collection_id, exc)
        if wants_json(request):
            return Response({"jobs": job_ids}, status_code=202)
        return await self._collection(request, runtime, collection_id, notice=f"{len(job_ids)} document(s) queued for re-indexing.")
