"""pytest plugin (loaded by tests/conftest.py): real identity-provider processes and the `auth` helper.

Fixtures: `oidc_idp` / `oidc_idp_second` (session-scoped oidc-provider-mock processes on loopback),
`sso_settings` (settings overrides: one provider "staff"), `sso_settings_two` (providers "staff" and
"students"), `auth` (AuthActions for them). See tests/support/auth.py for usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from portal.embedded.idp import IdPProcess
from tests.support.auth import AuthActions, free_port, provider_settings


def _start_idp(tmp_path_factory: pytest.TempPathFactory, label: str) -> Iterator[IdPProcess]:
    log = tmp_path_factory.mktemp(f"idp-{label}") / "idp.log"
    idp = IdPProcess(free_port(), log_path=log)
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="session")
def oidc_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdPProcess]:
    yield from _start_idp(tmp_path_factory, "staff")


@pytest.fixture(scope="session")
def oidc_idp_second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdPProcess]:
    yield from _start_idp(tmp_path_factory, "students")


@pytest.fixture
def sso_settings(oidc_idp: IdPProcess) -> dict[str, Any]:
    return {"oidc_providers": [provider_settings("staff", oidc_idp)], "embedded_idp": False}


@pytest.fixture
def auth(oidc_idp: IdPProcess) -> AuthActions:
    return AuthActions({"staff": oidc_idp}, default_provider="staff")


@pytest.fixture
def sso_settings_two(oidc_idp: IdPProcess, oidc_idp_second: IdPProcess) -> dict[str, Any]:
    return {
        "oidc_providers": [
            provider_settings("staff", oidc_idp, label="Staff"),
            provider_settings("students", oidc_idp_second, label="Students"),
        ],
        "embedded_idp": False,
    }


@pytest.fixture
def auth_two(oidc_idp: IdPProcess, oidc_idp_second: IdPProcess) -> AuthActions:
    return AuthActions({"staff": oidc_idp, "students": oidc_idp_second}, default_provider="staff")
