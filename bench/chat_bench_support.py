"""Shared by the chat benchmarks: a real portal process (uvicorn), the instant LLM instrument, the sample identity
provider, and signed-in HTTP clients. Nothing here is used by tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.lean_http import LeanClient, Reply

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HTMX = {"accept": "text/html", "hx-request": "true"}
STREAM_URL = re.compile(r'sse-connect="(/chat/stream/[^"]+)"')

POLICY_TEXT = """# Hand hygiene policy

## Procedure

Staff must wash their hands with soap and water for at least 40 seconds before and after every patient contact.
Alcohol hand rub may be used instead when hands are not visibly dirty; rub for at least 20 seconds.
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[index], 2)


def wait_http(url: str, timeout: float = 180.0, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not become ready")


@dataclass
class Deployment:
    """A portal process with its instrument LLM and identity provider, on loopback."""

    llm_tokens: int
    llm_interval_ms: float
    llm_first_token_ms: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="enclave-bench-")))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    portal_port: int = field(default_factory=free_port)
    llm_port: int = field(default_factory=free_port)
    idp: Any = None
    clinical_collection_id: str = ""

    @property
    def portal_url(self) -> str:
        return f"http://127.0.0.1:{self.portal_port}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    def env(self) -> dict[str, str]:
        assert self.idp is not None
        provider = {"name": "staff", "label": "Staff", "discovery_url": self.idp.discovery_url,
                    "client_id": "enclave-bench", "client_secret": "bench-secret"}
        values = {
            "ENCLAVE_DATA_DIR": str(self.workdir / "data"),
            "ENCLAVE_PORT": str(self.portal_port),
            "ENCLAVE_PUBLIC_URL": self.portal_url,
            "ENCLAVE_LLM_BASE_URL": f"{self.llm_url}/v1",
            "ENCLAVE_LLM_MODEL": "instant",
            "ENCLAVE_EMBEDDED_LLM": "false",
            "ENCLAVE_EMBEDDED_IDP": "false",
            "ENCLAVE_OIDC_PROVIDERS": json.dumps([provider]),
            "ENCLAVE_SEED_SAMPLE_DATA": "true",
            "ENCLAVE_CHAT_QUESTIONS_PER_MINUTE": "1000000",
            "ENCLAVE_SESSION_IDLE_MINUTES": "600",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        if self.database_url:
            values["ENCLAVE_DATABASE_URL"] = self.database_url
        values.update(self.extra_env)
        return {**os.environ, **values}

    def start(self) -> None:
        from portal.embedded.idp import IdPProcess

        self.idp = IdPProcess(free_port(), log_path=self.workdir / "idp.log")
        self.idp.start()
        log = open(self.workdir / "instant-llm.log", "ab")  # noqa: SIM115
        self.processes.append(subprocess.Popen(  # noqa: S603
            [sys.executable, str(ROOT / "bench" / "instant_llm.py"), "--port", str(self.llm_port),
             "--tokens", str(self.llm_tokens), "--interval-ms", str(self.llm_interval_ms),
             "--first-token-ms", str(self.llm_first_token_ms)], stdout=log, stderr=log))
        wait_http(f"{self.llm_url}/v1/models")
        env = self.env()
        subprocess.run([sys.executable, "-c", "from portal.cli import main; main()", "db", "upgrade"],  # noqa: S603
                       env=env, check=True, capture_output=True)
        asyncio.run(self._seed(env))
        log = open(self.workdir / "portal.log", "ab")  # noqa: SIM115
        self.processes.append(subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", "from portal.cli import main; main()", "web"], env=env, stdout=log, stderr=log))
        wait_http(f"{self.portal_url}/readyz", timeout=240)

    async def _seed(self, env: dict[str, str]) -> None:
        """Sample collections and one indexed clinical policy, written before the portal opens the store."""
        from portal.logging import configure_logging
        from portal.runtime import Runtime
        from portal.seed import seed_sample_data
        from portal.settings import Settings
        from tests.chat.helpers import add_collection, add_document

        # The portal's code runs here too: its log lines go to stderr as in the portal, stdout keeps the bench's JSON.
        configure_logging()
        keys = {k[len("ENCLAVE_"):].lower(): v for k, v in env.items() if k.startswith("ENCLAVE_")}
        settings = Settings(**{k: json.loads(v) if k == "oidc_providers" else v for k, v in keys.items()})
        await seed_sample_data(settings)
        runtime = Runtime.create(settings)
        await runtime.start()
        try:
            clinical = await add_collection(runtime, "Clinical policies", ("nurse", "admin"))
            await add_document(runtime, clinical, "hand-hygiene.md", POLICY_TEXT)
            self.clinical_collection_id = clinical
        finally:
            await runtime.stop()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.idp is not None:
            self.idp.stop()

    async def sign_in(self, person_sub: str = "noah.nurse@example.org", connections: int = 600) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.portal_url, timeout=120,
                                   limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))
        start = await client.get("/auth/login/staff", params={"next": "/chat"}, follow_redirects=False)
        async with httpx.AsyncClient(timeout=10) as browser:
            chosen = await browser.post(start.headers["location"], data={"sub": person_sub})
        callback = urlsplit(chosen.headers["location"])
        done = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
        assert done.status_code in (302, 303), done.text[:300]
        await client.get("/chat", headers={"accept": "text/html"})
        client.headers["x-csrftoken"] = client.cookies.get("csrftoken") or client.cookies.get("__Host-csrftoken") or ""
        return client

    async def instrument_ttft(self) -> dict[str, float]:
        return await instrument_ttft(self.llm_url)


async def instrument_ttft(llm_url: str) -> dict[str, float]:
    """The instrument LLM's own time to first token (ms) for each question marker it has answered."""
    async with httpx.AsyncClient(timeout=10) as client:
        return dict((await client.get(f"{llm_url}/stats")).json()["ttft_ms"])


def portal_overhead_ms(asked: list[tuple[float, str]], ttft: dict[str, float]) -> list[float]:
    """Each question's time to its first token event (seconds, as measured by the client) less the instrument's own
    time to first token for it: the portal's share, in ms."""
    return [elapsed * 1000 - ttft.get(marker, 0.0) for elapsed, marker in asked]


def new_marker() -> str:
    return f"bench-{uuid.uuid4().hex[:16]}"


def lean_copy(client: httpx.AsyncClient) -> LeanClient:
    """The signed-in session of an httpx client, for the lean load client (see bench/lean_http.py)."""
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return LeanClient(str(client.base_url).rstrip("/"), {"cookie": cookie, "x-csrftoken": client.headers["x-csrftoken"]})


async def ask(client: httpx.AsyncClient | LeanClient, marker: str) -> str:
    question = {"question": f"{marker} How long must staff wash their hands?"}
    if isinstance(client, LeanClient):
        response: httpx.Response | Reply = await client.post_form("/chat/ask", question, HTMX)
    else:
        response = await client.post("/chat/ask", data=question, headers=HTMX)
    found = STREAM_URL.search(response.text)
    if response.status_code != 200 or not found:
        raise RuntimeError(f"ask answered {response.status_code}: {response.text[:200]}")
    return found.group(1)
