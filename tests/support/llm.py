"""pytest plugin (loaded by tests/conftest.py): the REAL local model server, started once per test session.

Fixture `llm_server`: llama.cpp's OpenAI-compatible server with the packaged SmolLM2-135M-Instruct on a free
loopback port (ready in about 2 s). Use `llm_server.base_url` as ENCLAVE_LLM_BASE_URL.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portal.embedded.llm_server import EmbeddedLLMServer

LLM_CONTEXT_WINDOW = 4096


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedLLMServer]:
    log = tmp_path_factory.mktemp("llm") / "llama-server.log"
    server = EmbeddedLLMServer(_free_port(), context_window=LLM_CONTEXT_WINDOW, alias="smollm2", log_path=log)
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()
