"""Join tokens: how a new host proves it may become a node, and how it knows the real cluster.

A join token is `HN10<ca-hash>::<id>.<secret>`, as k3s's `K10<hash>::…` and kubeadm's
`--token id.secret --discovery-token-ca-cert-hash sha256:<hash>` together:
- `<ca-hash>` is the SHA-256 of the cluster CA's public key (its DER SubjectPublicKeyInfo, as
  kubeadm hashes it). The joining host fetches the CA over an unverified connection and refuses
  it unless it hashes to this, before it sends the secret anywhere: a man in the middle learns
  nothing and cannot pose as the cluster.
- `<id>.<secret>` is an upstream bootstrap token (6 and 16 characters of [a-z0-9]) stored as a
  Secret `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`, with an
  expiration. Operators list and delete them as upstream's (`kubectl -n kube-system get secrets`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hypernetes.objects import Obj

PREFIX = "HN10"
SECRET_TYPE = "bootstrap.kubernetes.io/token"
NAMESPACE = "kube-system"
_ALPHABET = string.ascii_lowercase + string.digits
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_JOIN = re.compile(r"^HN10([0-9a-f]{64})::([a-z0-9]{6}\.[a-z0-9]{16})$")


class BadJoinToken(ValueError):
    """Not a join token, or one that does not name this cluster."""


@dataclass(frozen=True)
class JoinToken:
    ca_hash: str  # hex SHA-256 of the CA's SubjectPublicKeyInfo
    id: str
    secret: str

    @property
    def bootstrap(self) -> str:
        """The `id.secret` part, sent to the API server once the CA is trusted."""
        return f"{self.id}.{self.secret}"

    def __str__(self) -> str:
        return f"{PREFIX}{self.ca_hash}::{self.bootstrap}"


def ca_hash(ca_pem: bytes) -> str:
    """kubeadm's CA pin: SHA-256 over the CA certificate's DER SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def new_token(ca_pem: bytes) -> JoinToken:
    pick = "".join(secrets.choice(_ALPHABET) for _ in range(22))
    return JoinToken(ca_hash(ca_pem), pick[:6], pick[6:])


def parse(text: str) -> JoinToken:
    m = _JOIN.match(text.strip())
    if m is None:
        raise BadJoinToken("a join token looks like HN10<64 hex digits>::<6 chars>.<16 chars>")
    token_id, _, secret = m.group(2).partition(".")
    return JoinToken(m.group(1), token_id, secret)


def split_bootstrap(text: str) -> tuple[str, str] | None:
    """(id, secret) of an `id.secret` bootstrap token, or None if it is not one."""
    m = _TOKEN.match(text)
    return (m.group(1), m.group(2)) if m else None


def secret_name(token_id: str) -> str:
    return f"bootstrap-token-{token_id}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bootstrap_secret(token: JoinToken, ttl: dt.timedelta | None, description: str = "") -> Obj:
    """The Secret that makes `token` valid (upstream's bootstrap-token layout); ttl None: forever."""
    data = {
        "token-id": _b64(token.id),
        "token-secret": _b64(token.secret),
        "usage-bootstrap-authentication": _b64("true"),
        "description": _b64(description or "a host joins as a node (hypernetes node join)"),
    }
    if ttl is not None:
        data["expiration"] = _b64(_rfc3339(dt.datetime.now(dt.UTC) + ttl))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(token.id), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "data": data,
    }


def _field(secret: Obj, key: str) -> str:
    try:
        return base64.b64decode(((secret.get("data") or {}).get(key) or ""), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def valid_for(secret: Obj | None, token_id: str, token_secret: str, now: dt.datetime | None = None) -> bool:
    """Whether the stored Secret makes `id.secret` a live bootstrap token (compared in constant time)."""
    if secret is None or secret.get("type") != SECRET_TYPE:
        return False
    if _field(secret, "usage-bootstrap-authentication") != "true" or _field(secret, "token-id") != token_id:
        return False
    if not hmac.compare_digest(_field(secret, "token-secret").encode(), token_secret.encode()):
        return False
    expiration = _field(secret, "expiration")
    if expiration:
        try:
            expires = dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        except ValueError:
            return False  # an unreadable expiry never means "forever"
        if (now or dt.datetime.now(dt.UTC)) >= expires:
            return False
    return True
