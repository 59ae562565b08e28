"""Shared by the admin controllers: who is acting, page or fragment or JSON, and refusals shown on the page."""

from __future__ import annotations

import html
from typing import Any

from litestar import MediaType, Request, Response
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template
from litestar.utils.scope.state import ScopeState

from portal.access import require_principal
from portal.admin.actor import Actor
from portal.admin.documents import IncomingFile
from portal.admin.errors import AdminError
from portal.web.context import audit_context

AnyRequest = Request[Any, Any, Any]


def actor_of(request: AnyRequest) -> Actor:
    return Actor(require_principal(request), audit_context(request))


def is_htmx(request: AnyRequest) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_json(request: AnyRequest) -> bool:
    """API clients ask for JSON; browsers (and htmx) get pages and fragments."""
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept and not is_htmx(request)


def render_block(request: AnyRequest, template_name: str, block: str, context: dict[str, Any], status_code: int = 200) -> Response[str]:
    """One block of a page template: the fragment htmx swaps in, from the same markup as the full page."""
    engine = request.app.template_engine
    assert engine is not None
    template = engine.get_template(template_name)
    csrf = ScopeState.from_scope(request.scope).csrf_token
    token = csrf if isinstance(csrf, str) else ""
    jinja_context = template.new_context(
        {**context, "request": request, "csrf_input": f'<input type="hidden" name="_csrf_token" value="{html.escape(token)}">'}
    )
    body = "".join(template.blocks[block](jinja_context))
    return Response(body, media_type=MediaType.HTML, status_code=status_code)


def page(template_name: str, context: dict[str, Any], status_code: int = 200) -> Template:
    return Template(template_name=template_name, context=context, status_code=status_code, media_type=MediaType.HTML)


def json_or_redirect(request: AnyRequest, location: str, body: dict[str, Any], status_code: int = 200) -> Response[Any]:
    if wants_json(request):
        return Response(body, status_code=status_code, media_type=MediaType.JSON)
    return Redirect(location, status_code=303)


def refusal_for_api(request: AnyRequest, exc: AdminError) -> None:
    """API clients get the refusal as a 4xx with the plain-words reason; pages show it in place instead.

    A refusal for lack of rights is never shown in place: the page around it is one the person may not see.
    """
    if wants_json(request) or exc.status_code == 403:
        raise HTTPException(status_code=exc.status_code, detail=exc.message)


async def form_fields(request: AnyRequest) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def uploaded_files(request: AnyRequest, field: str = "files") -> list[IncomingFile]:
    form = await request.form()
    files: list[IncomingFile] = []
    for value in form.getall(field) if field in form else []:
        if isinstance(value, UploadFile) and (value.filename or value.file):
            data = await value.read()
            if value.filename or data:
                files.append(IncomingFile(value.filename, data))
    return files
