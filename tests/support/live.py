"""Real `enclave` processes for multi-process tests: start them on free ports, wait until they serve, stop them.

Each process runs in its own process group (``start_new_session``), so stopping it also ends whatever it
started; `stop()` sends SIGTERM, waits, then SIGKILL. Processes get a clean environment: none of the test
runner's ENCLAVE_* variables leak in, only what the test passes.

`LiveAuth` signs in through the real identity provider against a live server with an `httpx.AsyncClient`
(AuthActions needs the in-process app only to seed the sample role rules; here they are written straight
into the database the processes share).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from portal.embedded.idp import IdPProcess
from tests.support.auth import AuthActions, free_port

REPO = Path(__file__).resolve().parents[2]
ENCLAVE = str(Path(sys.executable).parent / "enclave")
T = TypeVar("T")


def clean_environment(**settings: str) -> dict[str, str]:
    """os.environ without any ENCLAVE_* variable, plus `settings` (ENCLAVE_* names) and offline model loading."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1"})
    env.update(settings)
    return env


def oidc_providers_json(idp: IdPProcess, name: str = "staff") -> str:
    return json.dumps([{"name": name, "label": "Staff sign-in", "discovery_url": idp.discovery_url,
                        "client_id": f"enclave-{name}", "client_secret": "test-secret"}])


@dataclass
class LiveProcess:
    """One `enclave ...` (or other) command running as its own process group, output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own command line
                self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def wait_until_serving(self, path: str = "/healthz", timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.process and self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer {path} within {timeout} s:\n{self.log_tail()}")

    def wait_for_log(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_tail(200_000):
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} never logged {text!r}:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the whole process group, then SIGKILL if it has not ended within `timeout`."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Anything the process started in its group and left behind goes too.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return process.returncode


def start_portal(name: str, env: Mapping[str, str], log_dir: Path, *, port: int | None = None) -> LiveProcess:
    """`enclave web` on a free loopback port (ENCLAVE_PORT and ENCLAVE_PUBLIC_URL set to it)."""
    port = port or free_port()
    full_env = dict(env)
    full_env["ENCLAVE_PORT"] = str(port)
    full_env.setdefault("ENCLAVE_PUBLIC_URL", f"http://127.0.0.1:{port}")
    return LiveProcess(name, [ENCLAVE, "web"], full_env, log_dir / f"{name}.log", port=port).start()


def start_enclave(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> LiveProcess:
    return LiveProcess(name, [ENCLAVE, *args], dict(env), log_dir / f"{name}.log").start()


def start_python_module(name: str, module: str, env: Mapping[str, str], log_dir: Path) -> LiveProcess:
    return LiveProcess(name, [sys.executable, "-m", module], dict(env), log_dir / f"{name}.log").start()


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, every: float = 0.2,
                     what: str = "condition") -> T:
    """Await `check()` until it returns something other than None (or raise after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(every)


async def seed_sample_role_rules(database_url: str) -> None:
    """The sample claim->role rules (teachers->teacher, enclave-admins->admin, ...) when the table is empty."""
    from sqlalchemy import select

    from portal.db.engine import make_engine, make_session_factory, transaction
    from portal.db.models import RoleMappingRule
    from portal.seed import SAMPLE_ROLE_RULES

    engine = make_engine(database_url)
    try:
        async with transaction(make_session_factory(engine)) as session:
            if (await session.execute(select(RoleMappingRule.id).limit(1))).first():
                return
            for position, (claim, match, value, role, effect) in enumerate(SAMPLE_ROLE_RULES):
                session.add(RoleMappingRule(position=position, claim=claim, match=match, value=value, role=role,
                                            effect=effect))
    finally:
        await engine.dispose()


class LiveAuth(AuthActions):
    """AuthActions for live servers: the login may start on one process and come back to another."""

    async def login_across(
        self, start: httpx.AsyncClient, finish: httpx.AsyncClient, person: str, provider: str | None = None
    ) -> httpx.Response:
        """Begin the sign-in on `start`, let the provider send the browser back to `finish` (another replica)."""
        provider = provider or self.default_provider
        sub, claims = self.person_claims(person, None, None, None)
        self.idps[provider].put_user(sub, claims)
        begun = await start.get(f"/auth/login/{provider}", params={"next": "/"}, follow_redirects=False)
        assert begun.status_code in (302, 303), f"/auth/login answered {begun.status_code}: {begun.text[:300]}"
        async with httpx.AsyncClient(timeout=10) as browser:
            chosen = await browser.post(begun.headers["location"], data={"sub": sub})
        assert chosen.status_code in (302, 303), f"the provider answered {chosen.status_code}"
        callback = urlsplit(chosen.headers["location"])
        # The login state cookie was set by `start`; a browser sends it to every replica behind one host name.
        for cookie in start.cookies.jar:
            finish.cookies.set(cookie.name, cookie.value or "", domain=cookie.domain, path=cookie.path)
        return await finish.get(f"{callback.path}?{callback.query}", follow_redirects=False)


def copy_cookies(source: httpx.AsyncClient, target: httpx.AsyncClient) -> None:
    """What a browser does behind a load balancer: the same cookies reach whichever replica answers."""
    for cookie in source.cookies.jar:
        target.cookies.set(cookie.name, cookie.value or "", domain=cookie.domain, path=cookie.path)


def any_cookie(client: httpx.AsyncClient, names: tuple[str, ...]) -> str | None:
    for cookie in client.cookies.jar:
        if cookie.name in names:
            return cookie.value
    return None


def redis_url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{db}").geturl()


def dump_logs(processes: list[Any]) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in processes)
