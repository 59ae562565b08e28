"""Admin pages for one document: metadata, chunks and readers; replace, re-index and delete."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, PermissionDeniedException

from portal.access import can_manage_collection, requires_login
from portal.admin import documents, views
from portal.admin.errors import AdminError, BadInput
from portal.admin.web import AnyRequest, actor_of, json_or_redirect, page, refusal_for_api, uploaded_files, wants_json
from portal.runtime import Runtime


class DocumentsController(Controller):
    path = "/admin/documents"
    guards = [requires_login]

    async def _page(
        self, request: AnyRequest, runtime: Runtime, document_id: str, *, error: str | None = None,
        notice: str | None = None, status_code: int = 200,
    ) -> Any:
        actor = actor_of(request)
        async with runtime.db() as session:
            data = await views.document_page(session, document_id)
            if data is None:
                raise NotFoundException("That document does not exist (it may have been deleted).")
            if not await can_manage_collection(session, actor.principal, data.collection.id):
                raise PermissionDeniedException("You do not manage this document's collection.")
        if wants_json(request):
            d = data.document
            return Response({
                "id": d.id, "collection_id": d.collection_id, "filename": d.filename, "title": d.title,
                "status": d.status, "progress": d.progress, "error": d.error, "version": d.version,
                "chunk_count": d.chunk_count, "readers": data.readers,
                "chunks": [{"id": c.id, "ordinal": c.ordinal, "section": c.section, "page": c.page, "text": c.text}
                           for c in data.chunks],
            }, status_code=status_code)
        return page("admin/document.html.j2", {"data": data, "error": error, "notice": notice,
                                               "max_upload_mb": runtime.settings.max_upload_mb}, status_code)

    async def _refused(self, request: AnyRequest, runtime: Runtime, document_id: str, exc: AdminError) -> Any:
        """An API client gets the refusal as its 4xx; a person sees the document page again, the reason on it."""
        refusal_for_api(request, exc)
        return await self._page(request, runtime, document_id, error=exc.message, status_code=exc.status_code)

    @get("/{document_id:str}", name="admin:document")
    async def show(self, request: AnyRequest, runtime: NamedDependency[Runtime], document_id: str) -> Any:
        return await self._page(request, runtime, document_id)

    @post("/{document_id:str}/replace", name="admin:document_replace")
    async def replace(self, request: AnyRequest, runtime: NamedDependency[Runtime], document_id: str) -> Any:
        try:
            files = await uploaded_files(request, "file")
            if len(files) != 1:
                raise BadInput("Choose one file: the new version of this document.")
            job_id = await documents.replace_document(runtime, actor_of(request), document_id, files[0])
        except AdminError as exc:
            return await self._refused(request, runtime, document_id, exc)
        if wants_json(request):
            return Response({"job": job_id, "unchanged": job_id is None}, status_code=202)
        notice = ("The new version is queued; the current version stays searchable until it is indexed."
                  if job_id else "That file is identical to the current version; nothing to do.")
        return await self._page(request, runtime, document_id, notice=notice)

    @post("/{document_id:str}/reindex", name="admin:document_reindex")
    async def reindex(self, request: AnyRequest, runtime: NamedDependency[Runtime], document_id: str) -> Any:
        try:
            job_id = await documents.reindex_document(runtime, actor_of(request), document_id)
        except AdminError as exc:
            return await self._refused(request, runtime, document_id, exc)
        if wants_json(request):
            return Response({"job": job_id}, status_code=202)
        return await self._page(request, runtime, document_id, notice="Queued for re-indexing.")

    @post("/{document_id:str}/delete", name="admin:document_delete")
    async def delete(self, request: AnyRequest, runtime: NamedDependency[Runtime], document_id: str) -> Any:
        async with runtime.db() as session:
            data = await views.document_page(session, document_id, chunk_limit=0)
        try:
            report = await documents.delete_document(runtime, actor_of(request), document_id)
        except AdminError as exc:
            refusal_for_api(request, exc)
            if data is None or exc.status_code == 403:
                raise (NotFoundException(exc.message) if data is None else PermissionDeniedException(exc.message)) from None
            return await self._page(request, runtime, document_id, error=exc.message, status_code=exc.status_code)
        body = {"deleted": document_id, "chunks": report.chunks, "vectors": report.vectors, "files": report.files,
                "vectors_left": report.vectors_left}
        assert data is not None
        return json_or_redirect(request, f"/admin/collections/{data.collection.id}", body)
