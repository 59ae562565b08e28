"""The identity providers in effect: those configured, or the embedded sample provider for the quick start."""

from __future__ import annotations

from pydantic import SecretStr

from portal.settings import OIDCProviderSettings, Settings

EMBEDDED_PROVIDER_NAME = "local"
EMBEDDED_CLIENT_ID = "enclave-local"


def embedded_provider(settings: Settings, client_id: str = EMBEDDED_CLIENT_ID, secret: str | None = None) -> OIDCProviderSettings:
    return OIDCProviderSettings(
        name=EMBEDDED_PROVIDER_NAME,
        label="Sample people (local test sign-in)",
        discovery_url=f"http://127.0.0.1:{settings.embedded_idp_port}/.well-known/openid-configuration",
        client_id=client_id,
        client_secret=SecretStr(secret) if secret else None,
    )


def effective_providers(settings: Settings) -> list[OIDCProviderSettings]:
    if settings.oidc_providers:
        return list(settings.oidc_providers)
    if settings.embedded_idp:
        return [embedded_provider(settings)]
    return []


def redirect_uri(settings: Settings, provider_name: str) -> str:
    return f"{settings.public_url.rstrip('/')}/auth/callback/{provider_name}"
