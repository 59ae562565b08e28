"""pytest plugin (loaded by tests/conftest.py): the REAL local model server, started once per test session.

Fixture `llm_server`: llama.cpp's OpenAI-compatible server (llama-cpp-python) with the packaged
SmolLM2-135M-Instruct on a free loopback port; `llm_server.base_url` is the ENCLAVE_LLM_BASE_URL to use.

It runs one thread: on a 2-core machine shared with the portal, the embedder and other test processes, llama.cpp's
spinning worker threads slow each other down badly (measured: 0.2 s to first token with one thread, 2 s with two).
The first completion after start is slow (about 15 s here, one-off set-up inside llama.cpp), so the fixture makes
one before handing the server out.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from portal.embedded.llm_server import smollm2_gguf_path

LLM_CONTEXT_WINDOW = 4096


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalModelServer:
    def __init__(self, port: int, log_path: Path, threads: int = 1) -> None:
        self.port = port
        self.log_path = log_path
        self.threads = threads
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 180.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()), "--host", "127.0.0.1",
             "--port", str(self.port), "--model_alias", "smollm2", "--n_ctx", str(LLM_CONTEXT_WINDOW),
             "--n_threads", str(self.threads)],
            stdout=log, stderr=log,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited ({self.process.returncode}); see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the llama.cpp server did not start in time")
            time.sleep(0.25)
        warm = httpx.post(f"{self.base_url}/chat/completions", timeout=timeout, json={
            "model": "smollm2", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hello."}]})
        warm.raise_for_status()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    server = LocalModelServer(_free_port(), tmp_path_factory.mktemp("llm") / "llama-server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
