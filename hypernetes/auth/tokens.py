"""Signed bearer tokens: compact JWTs (HS256) the API server issues and checks itself.

A token names its subject, kind (user, serviceaccount, node), tenant, issue and expiry times and
a unique id (`jti`) for revocation. The signing key is 32 random bytes in the cluster's PKI
directory, made on first start; losing it invalidates every token, nothing else. The signature is
checked before anything in the payload is believed, with a constant-time compare.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ISSUER = "https://hypernetes.local"
MAX_TOKEN_BYTES = 8192  # refuse absurd Authorization headers before decoding anything
_HEADER = {"alg": "HS256", "typ": "JWT", "kid": "hn1"}
KINDS = ("user", "serviceaccount", "node")


class TokenInvalid(Exception):
    """Malformed, forged, tampered or expired."""


@dataclass(frozen=True)
class Claims:
    sub: str  # user name, service account (ns:name) or node name
    kind: str  # one of KINDS
    iat: float
    exp: float
    jti: str
    tenant: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific: sa/pod uids, audiences


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise TokenInvalid("bad encoding") from None


def load_or_create_key(path: Path) -> bytes:
    if path.exists():
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    os.replace(tmp, path)
    return key


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("token signing key must be at least 32 bytes")
        self._key = key
        self._header = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())

    def _sign(self, signing_input: str) -> str:
        return _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())

    def issue(
        self,
        sub: str,
        kind: str,
        ttl: float,
        *,
        tenant: str = "",
        extra: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> tuple[str, Claims]:
        if kind not in KINDS:
            raise ValueError(f"unknown token kind {kind!r}")
        iat = time.time() if now is None else now
        claims = Claims(
            sub, kind, round(iat, 3), int(iat + ttl), secrets.token_hex(16), tenant, dict(extra or {})
        )
        payload = {
            "iss": ISSUER,
            "sub": sub,
            "hn.kind": kind,
            "iat": round(iat, 3),
            "exp": int(claims.exp),
            "jti": claims.jti,
            "hn.tenant": tenant,
            **claims.extra,
        }
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{self._header}.{body}"
        return f"{signing_input}.{self._sign(signing_input)}", claims

    @staticmethod
    def looks_like_ours(token: str) -> bool:
        return (
            token.count(".") == 2
            and token.startswith("eyJ")
            and len(token) <= MAX_TOKEN_BYTES
            and token.isascii()
        )

    def verify(self, token: str, *, now: float | None = None) -> Claims:
        """The claims of a genuine, unexpired token; TokenInvalid otherwise."""
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2 or not token.isascii():
            raise TokenInvalid("not a token")  # (compare_digest raises on non-ASCII str)
        header, body, sig = token.split(".")
        if header != self._header:
            raise TokenInvalid("unexpected header")  # pins alg: no "none", no key confusion
        if not hmac.compare_digest(sig, self._sign(f"{header}.{body}")):
            raise TokenInvalid("bad signature")
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise TokenInvalid("bad payload") from None
        if not isinstance(payload, dict):
            raise TokenInvalid("bad payload")
        sub, kind, jti = payload.get("sub"), payload.get("hn.kind"), payload.get("jti")
        iat, exp, tenant = payload.get("iat"), payload.get("exp"), payload.get("hn.tenant", "")
        if not (
            isinstance(sub, str)
            and kind in KINDS
            and isinstance(jti, str)
            and isinstance(tenant, str)
            and isinstance(iat, (int, float))
            and isinstance(exp, int)
            and not isinstance(iat, bool)
        ):
            raise TokenInvalid("bad claims")
        if (time.time() if now is None else now) >= exp:
            raise TokenInvalid("expired")
        extra = {
            k: v
            for k, v in payload.items()
            if k not in ("iss", "sub", "hn.kind", "iat", "exp", "jti", "hn.tenant")
        }
        return Claims(sub, str(kind), float(iat), float(exp), jti, tenant, extra)
