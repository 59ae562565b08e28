"""A tiny OpenID provider under the test's control, served over real HTTP on loopback.

oidc-provider-mock only issues good tokens; this one issues what the test asks for (tampered, expired, wrong
audience, unknown key, wrong nonce), rotates keys, and records what Enclave sent (to check PKCE).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


@dataclass
class TokenIdPState:
    base_url: str = ""
    mode: str = "good"  # good | tampered | expired | wrong_aud | unknown_kid | wrong_nonce | wrong_iss | token_error
    claims: dict[str, Any] = field(default_factory=lambda: {"sub": "ctl-user", "email": "ctl@example.org", "groups": ["staff"]})
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)}))
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    jwks_fetches: int = 0

    def rotate_key(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4)})

    def id_token(self, client_id: str, nonce: str) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.base_url, "aud": client_id, "iat": now, "exp": now + 300, "nonce": nonce, **self.claims,
        }
        key = self.key
        if self.mode == "expired":
            payload["iat"], payload["exp"] = now - 3600, now - 1800
        elif self.mode == "future_iat":
            payload["iat"], payload["exp"] = now + 3600, now + 7200
        elif self.mode == "wrong_aud":
            payload["aud"] = "someone-else"
        elif self.mode == "wrong_nonce":
            payload["nonce"] = "not-the-nonce"
        elif self.mode == "wrong_iss":
            payload["iss"] = "https://evil.example"
        elif self.mode == "unknown_kid":
            key = RSAKey.generate_key(2048, parameters={"kid": "never-published"})
        token = jwt.encode({"alg": "RS256", "kid": key.kid}, payload, key)
        if self.mode == "tampered":
            header, body, signature = token.split(".")
            import base64

            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            claims["groups"] = ["enclave-admins"]
            body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
            token = ".".join([header, body, signature])
        return token


def _handler(state: TokenIdPState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _json(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                self._json({
                    "issuer": state.base_url,
                    "authorization_endpoint": state.base_url + "/authorize",
                    "token_endpoint": state.base_url + "/token",
                    "jwks_uri": state.base_url + "/jwks",
                    "response_types_supported": ["code"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                })
            elif url.path == "/jwks":
                state.jwks_fetches += 1
                self._json(KeySet([state.key]).as_dict(private=False))
            elif url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                state.authorize_requests.append(query)
                code = secrets.token_urlsafe(16)
                state.codes[code] = query
                self.send_response(302)
                self.send_header("location", f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}")
                self.end_headers()
            else:
                self._json({"error": "not_found"}, 404)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            state.token_requests.append(form)
            request = state.codes.pop(form.get("code", ""), None)
            if request is None or state.mode == "token_error":
                self._json({"error": "invalid_grant"}, 400)
                return
            self._json({
                "access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                "id_token": state.id_token(request["client_id"], request.get("nonce", "")),
            })

    return Handler


@contextmanager
def run_token_idp() -> Iterator[TokenIdPState]:
    state = TokenIdPState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
