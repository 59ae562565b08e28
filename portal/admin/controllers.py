"""The admin area's route handlers, under one router that allows request bodies as large as a batch upload."""

from __future__ import annotations

import importlib

from litestar import Router
from litestar.types import ControllerRouterHandler

from portal.settings import Settings

# A browser batch may carry this many files of the maximum size; bigger loads go through `enclave ingest`.
MAX_FILES_PER_UPLOAD = 20

_CONTROLLERS = (
    ("portal.admin.collections_controller", "CollectionsController"),
    ("portal.admin.documents_controller", "DocumentsController"),
    ("portal.admin.people_controller", "PeopleController"),
    ("portal.admin.usage_controller", "UsageController"),
)


def admin_route_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = []
    for module_name, attr in _CONTROLLERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        handlers.append(getattr(module, attr))
    body_limit = settings.max_upload_mb * 1024 * 1024 * MAX_FILES_PER_UPLOAD + 1024 * 1024
    return [Router(path="/", route_handlers=handlers, request_max_body_size=body_limit)]
