"""Admin-area fixtures: a started Runtime on a private database, vector store and files folder, with the real model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from portal.jobs.workers import InProcessWorkers
from portal.runtime import Runtime


@pytest.fixture
async def runtime(settings_factory: Any, database_url: str) -> AsyncIterator[Runtime]:
    """workers=0 in settings; the test's own in-process worker runs with a short old-version grace period."""
    settings = settings_factory(database_url=database_url, workers=0)
    runtime = Runtime.create(settings)
    await runtime.start()
    await runtime.wait_for_embedder()
    workers = InProcessWorkers(runtime, 1, context_overrides={"old_version_grace_s": 0.3})
    workers.start()
    runtime.jobs = workers
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
async def idle_runtime(settings_factory: Any, database_url: str) -> AsyncIterator[Runtime]:
    """No worker at all: the test runs (and interrupts) jobs itself."""
    settings = settings_factory(database_url=database_url, workers=0)
    runtime = Runtime.create(settings)
    await runtime.start()
    await runtime.wait_for_embedder()
    try:
        yield runtime
    finally:
        await runtime.stop()
