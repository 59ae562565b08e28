"""The embedded identity provider for the quick start: oidc-provider-mock on loopback, with sample people.

`enclave run` starts it when no OIDC provider is configured, so a newcomer signs in through a real OpenID
Connect flow (never a bypass) as a teacher, a nurse or an administrator. Tests start the same process.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from portal.settings import Settings


@dataclass(frozen=True)
class SamplePerson:
    key: str
    sub: str
    name: str
    email: str
    groups: tuple[str, ...]

    def claims(self) -> dict[str, Any]:
        return {"name": self.name, "email": self.email, "email_verified": True, "groups": list(self.groups)}


SAMPLE_PEOPLE: dict[str, SamplePerson] = {
    p.key: p
    for p in (
        SamplePerson("teacher", "tara.teacher@example.org", "Tara Teacher", "tara.teacher@example.org", ("teachers", "staff")),
        SamplePerson("nurse", "noah.nurse@example.org", "Noah Nurse", "noah.nurse@example.org", ("nurses", "staff")),
        SamplePerson("admin", "ada.admin@example.org", "Ada Admin", "ada.admin@example.org", ("enclave-admins", "staff")),
    )
}


# The provider asks Linux for SIGTERM when its parent dies (PR_SET_PDEATHSIG), then runs oidc-provider-mock:
# uvicorn re-raises SIGTERM after its shutdown, so `enclave run`'s context managers never get to stop it.
# Done inside the child (not preexec_fn, which is unsafe in a threaded parent).
_BOOTSTRAP = (
    "import contextlib, ctypes, runpy, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    with contextlib.suppress(OSError, AttributeError):\n"
    "        ctypes.CDLL('libc.so.6').prctl(1, signal.SIGTERM)\n"
    "sys.argv[0] = 'oidc-provider-mock'\n"
    "runpy.run_module('oidc_provider_mock', run_name='__main__', alter_sys=True)\n"
)


class IdPProcess:
    """An oidc-provider-mock process on 127.0.0.1:<port> (its own process, like a real identity provider)."""

    def __init__(
        self,
        port: int,
        *,
        people: tuple[SamplePerson, ...] = tuple(SAMPLE_PEOPLE.values()),
        require_registration: bool = False,
        log_path: Path | None = None,
    ) -> None:
        self.port = port
        self.people = people
        self.require_registration = require_registration
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-c", _BOOTSTRAP, "--host", "127.0.0.1", "--port", str(self.port)]
        if self.require_registration:
            cmd += ["--require-registration", "true"]
        for person in self.people:
            cmd += ["--user-claims", json.dumps({"sub": person.sub, **person.claims()})]
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, NO_COLOR="1", PYTHONWARNINGS="ignore")
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log, env=env)  # noqa: S603
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the identity provider exited at start (code {self._proc.returncode})")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.discovery_url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the identity provider did not answer on port {self.port} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> IdPProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def put_user(self, sub: str, claims: dict[str, Any]) -> None:
        """Set (or replace) a person's claims, e.g. their groups, before they sign in."""
        response = httpx.put(f"{self.base_url}/users/{sub}", json=claims, timeout=5)
        response.raise_for_status()

    def register_client(self, redirect_uris: list[str]) -> tuple[str, str]:
        """Dynamic client registration (RFC 7591): returns (client_id, client_secret)."""
        response = httpx.post(
            f"{self.base_url}/oauth2/clients",
            json={"redirect_uris": redirect_uris, "token_endpoint_auth_method": "client_secret_basic"},
            timeout=5,
        )
        response.raise_for_status()
        body = response.json()
        return str(body["client_id"]), str(body["client_secret"])


@contextlib.contextmanager
def embedded_idp(settings: Settings) -> Iterator[Settings]:
    """EMBEDDED_HOOKS entry: start the sample provider and point Enclave at it as a registered client."""
    if not settings.uses_embedded_idp:
        yield settings
        return
    from portal.auth.providers import EMBEDDED_PROVIDER_NAME, embedded_provider, redirect_uri

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    idp = IdPProcess(settings.embedded_idp_port, require_registration=True, log_path=settings.data_dir / "idp.log")
    print(f"starting the embedded identity provider on {idp.base_url} ...", file=sys.stderr)  # noqa: T201
    with idp:
        client_id, secret = idp.register_client([redirect_uri(settings, EMBEDDED_PROVIDER_NAME)])
        provider = embedded_provider(settings, client_id=client_id, secret=secret)
        yield settings.model_copy(update={"oidc_providers": [provider]})
