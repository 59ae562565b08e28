"""One OpenID Connect provider as Enclave talks to it: discovery, the authorization URL, the code exchange
(authlib's OAuth 2 client, with PKCE S256) and ID-token verification (joserfc, JWKS re-fetched on a new key id).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import KeySet

from portal.settings import OIDCProviderSettings

# Clock skew accepted on exp/iat between Enclave and the identity provider.
CLOCK_SKEW_S = 120
DISCOVERY_TTL_S = 3600
HTTP_TIMEOUT_S = 10.0
ALLOWED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class OIDCError(Exception):
    """A sign-in problem; `reason` is a short code for the audit trail, the message is for people."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ProviderUnavailable(OIDCError):
    pass


class TokenRejected(OIDCError):
    pass


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None


@dataclass(frozen=True)
class TokenResult:
    claims: dict[str, Any]
    id_token: str


class OIDCProvider:
    """Per-process cache of one provider's discovery document and keys; login state never lives here."""

    def __init__(self, config: OIDCProviderSettings, redirect_uri: str) -> None:
        self.config = config
        self.redirect_uri = redirect_uri
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                response = await client.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                "provider_unreachable", f"The sign-in service '{self.config.label}' could not be reached."
            ) from exc
        if response.status_code != 200:
            raise ProviderUnavailable(
                "provider_error", f"The sign-in service '{self.config.label}' answered with an error."
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderUnavailable("provider_error", f"The sign-in service '{self.config.label}' sent nonsense.") from exc
        if not isinstance(body, dict):
            raise ProviderUnavailable("provider_error", f"The sign-in service '{self.config.label}' sent nonsense.")
        return body

    async def metadata(self) -> ProviderMetadata:
        async with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_TTL_S:
                doc = await self._get_json(self.config.discovery_url)
                try:
                    self._metadata = ProviderMetadata(
                        issuer=doc["issuer"],
                        authorization_endpoint=doc["authorization_endpoint"],
                        token_endpoint=doc["token_endpoint"],
                        jwks_uri=doc["jwks_uri"],
                        end_session_endpoint=doc.get("end_session_endpoint"),
                    )
                except KeyError as exc:
                    raise ProviderUnavailable(
                        "provider_error", f"The sign-in service '{self.config.label}' has an incomplete configuration."
                    ) from exc
                self._metadata_at = time.monotonic()
            return self._metadata

    def _oauth_client(self) -> AsyncOAuth2Client:
        secret = self.config.client_secret.get_secret_value() if self.config.client_secret else None
        return AsyncOAuth2Client(
            client_id=self.config.client_id,
            client_secret=secret,
            scope=" ".join(self.config.scopes),
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT_S,
        )

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        meta = await self.metadata()
        async with self._oauth_client() as client:
            url, _ = client.create_authorization_url(
                meta.authorization_endpoint, state=state, code_verifier=code_verifier, nonce=nonce
            )
        return str(url)

    async def exchange_code(self, *, code: str, code_verifier: str) -> dict[str, Any]:
        meta = await self.metadata()
        try:
            async with self._oauth_client() as client:
                token = await client.fetch_token(
                    meta.token_endpoint, grant_type="authorization_code", code=code, code_verifier=code_verifier
                )
        except Exception as exc:  # noqa: BLE001 - transport errors and OAuth errors both mean "no token"
            name = type(exc).__name__
            if "Connect" in name or "Timeout" in name or isinstance(exc, OSError):
                raise ProviderUnavailable(
                    "provider_unreachable", f"The sign-in service '{self.config.label}' could not be reached."
                ) from exc
            raise TokenRejected(
                "code_exchange_failed", "The sign-in service did not accept this sign-in. Please start again."
            ) from exc
        return dict(token)

    async def _key_set(self, refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            meta = await self.metadata()
            try:
                self._keys = KeySet.import_key_set(await self._get_json(meta.jwks_uri))  # type: ignore[arg-type]
            except JoseError as exc:
                raise ProviderUnavailable("provider_error", "The sign-in service published unusable keys.") from exc
        return self._keys

    async def verify_id_token(self, id_token: str, *, nonce: str, now: datetime) -> dict[str, Any]:
        meta = await self.metadata()
        kid = _unverified_kid(id_token)
        keys = await self._key_set(refresh=False)
        if not _has_kid(keys, kid):
            # The provider may have rotated its keys since we fetched them: fetch once more, then give up.
            keys = await self._key_set(refresh=True)
            if not _has_kid(keys, kid):
                raise TokenRejected("unknown_signing_key", "The sign-in could not be verified (unknown signing key).")
        try:
            token = jwt.decode(id_token, keys, algorithms=ALLOWED_ALGORITHMS)
        except BadSignatureError as exc:
            raise TokenRejected("bad_signature", "The sign-in could not be verified (bad signature).") from exc
        except JoseError as exc:
            raise TokenRejected("malformed_token", "The sign-in could not be verified (malformed token).") from exc
        registry = jwt.JWTClaimsRegistry(
            now=int(now.timestamp()),
            leeway=CLOCK_SKEW_S,
            iss={"essential": True, "value": meta.issuer},
            aud={"essential": True, "value": self.config.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(token.claims)
        except ExpiredTokenError as exc:
            raise TokenRejected("token_expired", "The sign-in has expired. Please sign in again.") from exc
        except (InvalidClaimError, MissingClaimError) as exc:
            claim = getattr(exc, "claim", "claim")
            raise TokenRejected(f"invalid_{claim}", f"The sign-in could not be verified (wrong '{claim}').") from exc
        claims = dict(token.claims)
        iat = claims.get("iat")
        if isinstance(iat, int | float) and iat > now.timestamp() + CLOCK_SKEW_S:
            raise TokenRejected("invalid_iat", "The sign-in could not be verified (issued in the future).")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.config.client_id:
            raise TokenRejected("invalid_azp", "The sign-in could not be verified (wrong 'azp').")
        return claims


def _unverified_kid(id_token: str) -> str | None:
    import base64
    import json

    try:
        header_b64 = id_token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    except (ValueError, IndexError) as exc:
        raise TokenRejected("malformed_token", "The sign-in could not be verified (malformed token).") from exc
    kid = header.get("kid") if isinstance(header, dict) else None
    return str(kid) if kid is not None else None


def _has_kid(keys: KeySet, kid: str | None) -> bool:
    if kid is None:
        return len(keys.keys) == 1  # a provider with one key may omit kid
    return any(k.kid == kid for k in keys.keys)


def new_login_secrets() -> tuple[str, str, str]:
    """state, nonce and PKCE code verifier (48 random characters, within RFC 7636's 43-128)."""
    return generate_token(32), generate_token(32), generate_token(48)
