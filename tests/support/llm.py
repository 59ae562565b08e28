"""pytest plugin (loaded by tests/conftest.py): the REAL local model server, started once per test session.

Fixture `llm_server`: the embedded llama.cpp server (`portal.embedded.llm_server.EmbeddedLLMServer`, the one
`enclave run` starts) with the packaged SmolLM2-135M-Instruct on a free loopback port, one thread, warmed up before
it is handed out; `llm_server.base_url` is the ENCLAVE_LLM_BASE_URL to use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portal.embedded.llm_server import EmbeddedLLMServer
from tests.conftest import free_port

LLM_CONTEXT_WINDOW = 4096


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedLLMServer]:
    server = EmbeddedLLMServer(
        free_port(), LLM_CONTEXT_WINDOW, log_path=tmp_path_factory.mktemp("llm") / "llama-server.log"
    )
    server.start(timeout=180.0)  # this machine is slow to load the model and to make the warm-up completion
    try:
        yield server
    finally:
        server.stop()
