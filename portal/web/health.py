"""/healthz (the process is alive) and /readyz (every dependency answers, each reported separately)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Response

from portal.runtime import Runtime


class HealthController(Controller):
    include_in_schema = False

    @get("/healthz", sync_to_thread=False)
    def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(self, runtime: NamedDependency[Runtime]) -> Response[dict[str, Any]]:
        problems = await runtime.readiness()
        checks = {name: ("ok" if problem is None else problem) for name, problem in problems.items()}
        failing = [name for name, problem in problems.items() if problem is not None]
        body: dict[str, Any] = {"status": "ready" if not failing else "not ready", "checks": checks}
        if failing:
            body["failing"] = failing
        return Response(body, status_code=200 if not failing else 503)
