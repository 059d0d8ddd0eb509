"""Wire models of API tokens and node joining (``/api/v1/tokens``, ``/nodes/{name}/join``)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from caravanserai.api.base import Timestamp, WireModel
from caravanserai.api.validation import DNS_LABEL_MAX, DNS_LABEL_PATTERN


class TokenRole(StrEnum):
    """Roles a user may give a token (node credentials come only from joining)."""

    VIEW = "view"
    EDIT = "edit"
    ADMIN = "admin"
    JOIN = "join"


class TokenCreate(WireModel):
    """Body of ``POST /api/v1/tokens``."""

    name: str = Field(min_length=1, max_length=DNS_LABEL_MAX, pattern=f"^{DNS_LABEL_PATTERN}$")
    role: TokenRole
    # Lifetime from now; omitted: until revoked.
    ttl_seconds: int | None = Field(default=None, ge=1, le=10 * 365 * 24 * 3600)


class TokenInfo(WireModel):
    """A stored token as listed (never its secret)."""

    name: str
    role: str
    node: str | None = None
    created_at: Timestamp
    expires_at: Timestamp | None = None


class TokenList(WireModel):
    items: list[TokenInfo]


class TokenCreated(TokenInfo):
    """The answer to a create: the only time the secret is shown."""

    token: str


class JoinResult(WireModel):
    """The answer to ``POST /api/v1/nodes/{name}/join``: the node's credential for this API
    and the secret this server's relay will present to the node's agent."""

    node: str
    credential: str
    agent_secret: str
