"""A real `enclave web` process keeps its startup heap out of full garbage collections (portal.heap).

Measured without this: one full collection of a portal process with the embedding model loaded held the interpreter
for 260-300 ms, and every streaming answer's next token waited behind it. The process reports how many objects it
froze on /metrics; once the model has loaded that is the model's libraries too (about 600,000 objects here).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live import ENCLAVE, LiveProcess, clean_environment, eventually, start_portal

pytestmark = pytest.mark.timeout(180)

FROZEN = re.compile(r"^enclave_gc_frozen_objects (\S+)$", re.MULTILINE)


@pytest.fixture
def portal(tmp_path: Path) -> Iterator[LiveProcess]:
    env = clean_environment(
        ENCLAVE_DATA_DIR=str(tmp_path / "data"),
        ENCLAVE_EMBEDDED_LLM="false",
        ENCLAVE_EMBEDDED_IDP="false",
        ENCLAVE_LLM_BASE_URL="http://127.0.0.1:9/v1",
        ENCLAVE_SEED_SAMPLE_DATA="false",
    )
    subprocess.run([ENCLAVE, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)  # noqa: S603
    process = start_portal("portal", env, tmp_path / "logs")
    try:
        process.wait_until_serving("/healthz", timeout=120)
        yield process
    finally:
        process.stop()


def frozen_objects(metrics_text: str) -> float:
    found = FROZEN.search(metrics_text)
    assert found, "the gauge enclave_gc_frozen_objects is missing from /metrics"
    return float(found.group(1))


async def test_a_server_process_freezes_its_heap_once_the_model_has_loaded(portal: LiveProcess) -> None:
    async with httpx.AsyncClient(base_url=portal.base_url, timeout=10) as client:
        at_start = frozen_objects((await client.get("/metrics")).text)
        assert at_start > 10_000  # the application as built, frozen before serving

        async def model_frozen() -> float | None:
            count = frozen_objects((await client.get("/metrics")).text)
            return count if count > at_start + 100_000 else None

        after_load = await eventually(model_frozen, timeout=120, every=0.5, what="the loaded model frozen")
        print(f"frozen objects: {at_start:.0f} at start, {after_load:.0f} with the model loaded")
        assert after_load > 400_000
    assert portal.alive()


def test_the_test_session_itself_freezes_nothing() -> None:
    import gc

    assert gc.get_freeze_count() == 0
