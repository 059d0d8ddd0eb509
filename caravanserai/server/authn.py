"""Authentication: who is asking. Bearer tokens only (users, join tokens, node credentials).

Tokens are ``cara_`` plus 256 random bits (URL-safe base64); the database keeps their
SHA-256 digest. ``CARA_API_TOKEN`` is a static admin token compared in constant time; the
in-process controllers call the registry directly, as the system (no token at all).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import hdrs, web

from caravanserai.api.base import utcnow
from caravanserai.api.problems import Unauthorized
from caravanserai.store.tokens import TokenStore

TOKEN_PREFIX = "cara_"
# Far above a real token (48 characters), far below the header limit: longer is never ours,
# and is refused before any hashing or database work.
MAX_TOKEN_LENGTH = 256


class Role(StrEnum):
    VIEW = "view"
    EDIT = "edit"
    ADMIN = "admin"
    JOIN = "join"
    NODE = "node"


USER_ROLES = (Role.VIEW, Role.EDIT, Role.ADMIN)


@dataclass(frozen=True)
class Identity:
    """The authenticated caller: a token's name and role (and node, for node credentials)."""

    name: str
    role: Role
    node: str | None = None

    def __str__(self) -> str:
        return f"node {self.node}" if self.node else f"{self.name} ({self.role})"


TOKENS = web.AppKey("tokens", TokenStore)
IDENTITY = web.RequestKey("identity", Identity)

ANONYMOUS_ADMIN = Identity("system:anonymous", Role.ADMIN)
STATIC_ADMIN = Identity("static:CARA_API_TOKEN", Role.ADMIN)
STATIC_JOIN = Identity("static:CARA_JOIN_TOKEN", Role.JOIN)


def acting_node(request: web.Request) -> str | None:
    """The node whose credential made this request (None for users): handlers pass it to the
    registry, which checks what a node may write inside the write's own transaction."""
    identity = request.get(IDENTITY)
    return identity.node if identity is not None and identity.role is Role.NODE else None


def new_token() -> str:
    """A fresh secret (shown once to whoever asked for it)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def node_credential_name(node: str) -> str:
    """The token name of a node's credential (``:`` keeps it apart from user token names)."""
    return f"node:{node}"


@dataclass(frozen=True)
class Authenticator:
    """Maps a request's ``Authorization`` header to an :class:`Identity` (or 401)."""

    tokens: TokenStore | None
    static_token: str | None = None
    join_token: str | None = None
    allow_anonymous: bool = False

    async def identify(self, request: web.Request) -> Identity | None:
        """The caller; None when anonymous (no header). Raises Unauthorized for a bad one."""
        raw = request.headers.get(hdrs.AUTHORIZATION)
        if raw is None:
            return ANONYMOUS_ADMIN if self.allow_anonymous else None
        try:
            header = raw.encode("ascii")
        except UnicodeEncodeError:
            raise Unauthorized("malformed Authorization header (not ASCII)") from None
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"bearer" or not value.strip():
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        token = value.strip()
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("invalid bearer token")
        if self.static_token and hmac.compare_digest(token, self.static_token.encode()):
            return STATIC_ADMIN
        if self.join_token and hmac.compare_digest(token, self.join_token.encode()):
            return STATIC_JOIN
        if self.tokens is None:
            raise Unauthorized("invalid bearer token")
        record = await self.tokens.lookup(hashlib.sha256(token).digest())
        if record is None:
            raise Unauthorized("invalid bearer token")
        if record.expired(utcnow()):
            raise Unauthorized(f'token "{record.name}" has expired')
        return Identity(record.name, Role(record.role), record.node)
