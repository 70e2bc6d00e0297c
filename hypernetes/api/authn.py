"""Authentication: who is calling. A pluggable step; the server asks each request's
Authorization header through an `Authenticator` (`hypernetes.auth.identity`). Static tokens (the
admin's) and the union live here; tenants' tokens come from `hypernetes.auth` backends."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from hypernetes.auth.identity import ADMIN, Authenticator, AuthUnavailable, UserInfo

__all__ = [
    "ADMIN",
    "AuthUnavailable",
    "Authenticator",
    "TokenAuthenticator",
    "UnionAuthenticator",
    "UserInfo",
    "bearer_token",
]


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TokenAuthenticator:
    """Static bearer tokens (the admin token written by `auth.ca`)."""

    def __init__(self, tokens: Mapping[str, UserInfo]) -> None:
        self._tokens = dict(tokens)

    async def authenticate(self, headers: Mapping[str, str]) -> UserInfo | None:
        token = bearer_token(headers)
        if token is None or not token.isascii():  # headers decode as latin-1/surrogates: not ours
            return None
        for known, user in self._tokens.items():
            # constant-time compare: the token is a password
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
        return None


class UnionAuthenticator:
    """The first authenticator that recognises the request wins."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self._all = tuple(authenticators)

    async def authenticate(self, headers: Mapping[str, str]) -> UserInfo | None:
        for a in self._all:
            user = await a.authenticate(headers)
            if user is not None:
                return user
        return None
