"""Error responses: a plain page for people, JSON for API clients, never a stack trace."""

from __future__ import annotations

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from portal.logging import get_logger

log = get_logger(__name__)

_TITLES = {
    400: "That request could not be understood",
    401: "Please sign in",
    403: "You do not have access to this",
    404: "Not found",
    405: "That action is not allowed here",
    409: "That conflicts with what is already there",
    413: "That upload is too large",
    415: "That kind of file is not supported",
    422: "Some of what you sent is not valid",
    429: "Too many requests",
    503: "A service Enclave needs is unavailable",
}


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept or request.headers.get("hx-request") == "true"


def _respond(request: Request, status: int, detail: str) -> Response:
    if wants_html(request):
        return Template(
            template_name="errors/error.html.j2",
            context={"status": status, "title": _TITLES.get(status, "Something went wrong"), "detail": detail},
            status_code=status,
            media_type=MediaType.HTML,
        )
    return Response({"status_code": status, "detail": detail}, status_code=status, media_type=MediaType.JSON)


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    response = _respond(request, exc.status_code, detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", error=type(exc).__name__, path=request.url.path)
    return _respond(request, HTTP_500_INTERNAL_SERVER_ERROR, "Enclave hit an unexpected problem. It has been logged.")
