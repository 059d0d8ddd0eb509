"""``/api/v1/tokens`` (create, list, revoke) and ``POST /api/v1/nodes/{name}/join``.

Creating a token answers its secret once; the database keeps only its digest. Joining
exchanges a join token (or an admin's) for the node's credential, bound to its name, and
the per-node secret the server's relay presents to that node's agent.
"""

from __future__ import annotations

import re
from datetime import timedelta

from aiohttp import web

from caravanserai.api.base import utcnow
from caravanserai.api.problems import BadRequest, Conflict, Unavailable
from caravanserai.api.tokens import JoinResult, TokenCreate, TokenCreated, TokenInfo, TokenList
from caravanserai.api.validation import DNS_LABEL_MAX, DNS_LABEL_PATTERN
from caravanserai.logging import get_logger
from caravanserai.server.authn import (
    TOKENS,
    Role,
    digest,
    new_token,
    node_credential_name,
)
from caravanserai.server.authz import IDENTITY
from caravanserai.server.bodies import read_document, validate_body
from caravanserai.server.httputil import json_response
from caravanserai.server.routing import OBJECT_NAME, Param, Reply, RouteSpec
from caravanserai.server.state import CONFIG
from caravanserai.store.tokens import TokenRecord, TokenStore

log = get_logger("caravanserai.server.tokens")

_DNS_LABEL = re.compile(f"^{DNS_LABEL_PATTERN}$")


def _tokens(request: web.Request) -> TokenStore:
    tokens = request.app.get(TOKENS)
    if tokens is None:
        raise Unavailable("this server keeps no tokens")
    return tokens


def _info(record: TokenRecord) -> TokenInfo:
    return TokenInfo(
        name=record.name, role=record.role, node=record.node,
        created_at=record.created_at, expires_at=record.expires_at,
    )


async def create_token(request: web.Request) -> web.Response:
    data = await read_document(request, max_bytes=request.app[CONFIG].max_body_bytes)
    body = validate_body(TokenCreate, data, what="token")
    expires = utcnow() + timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None
    secret = new_token()
    record = await _tokens(request).create(
        body.name, body.role.value, digest(secret), expires_at=expires
    )
    log.info("token.created", name=record.name, role=record.role,
             expires_at=str(record.expires_at) if record.expires_at else None)
    created = TokenCreated(**_info(record).model_dump(), token=secret)
    return json_response(created.to_wire(), 201)


async def list_tokens(request: web.Request) -> web.Response:
    records = await _tokens(request).list()
    return json_response(TokenList(items=[_info(r) for r in records]).to_wire())


async def revoke_token(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    record = await _tokens(request).revoke(name)
    log.info("token.revoked", name=record.name, role=record.role)
    return web.Response(status=204)


async def join_node(request: web.Request) -> web.Response:
    """Exchange a join token for the node's credential and its agent's relay secret.

    A node that already joined keeps its credential: a join token cannot take over an
    existing node's identity (an admin can, e.g. after re-installing the machine; or revoke
    ``node:NAME`` first). So a leaked join token admits new nodes, never impersonates one.
    """
    name = request.match_info["name"]
    if len(name) > DNS_LABEL_MAX or not _DNS_LABEL.match(name):
        raise BadRequest(f"invalid node name {name!r}: must be a DNS label")
    tokens = _tokens(request)
    identity = request[IDENTITY]
    credential_name = node_credential_name(name)
    if identity.role is not Role.ADMIN and await tokens.get(credential_name) is not None:
        raise Conflict(
            f'node "{name}" has already joined; to replace its credential, revoke it first '
            f"(caractrl token revoke {credential_name})"
        )
    credential, agent_secret = new_token(), new_token()
    await tokens.replace(
        credential_name, Role.NODE.value, digest(credential), node=name,
        agent_secret=agent_secret,
    )
    log.info("node.joined", node=name, by=str(identity))
    result = JoinResult(node=name, credential=credential, agent_secret=agent_secret)
    return json_response(result.to_wire(), 200)


_TOKEN_NAME = Param("name", "path", {"type": "string"}, "The token's name.", True)


def token_routes() -> list[RouteSpec]:
    """The token and join routes, for the server's route table."""
    return [
        RouteSpec(
            "POST", "/api/v1/tokens", create_token, "createToken", "Create an API token",
            "tokens", body=TokenCreate,
            replies=(Reply.json(201, "The token, with its secret (shown only now)",
                                TokenCreated),),
            problems=(400, 405, 409, 413, 415, 422),
        ),
        RouteSpec(
            "GET", "/api/v1/tokens", list_tokens, "listTokens", "List API tokens (no secrets)",
            "tokens", replies=(Reply.json(200, "The tokens", TokenList),),
            problems=(405,),
        ),
        RouteSpec(
            "DELETE", "/api/v1/tokens/{name}", revoke_token, "revokeToken",
            "Revoke an API token (it stops working at once)", "tokens",
            params=(_TOKEN_NAME,), replies=(Reply(204, "Revoked"),),
            problems=(404, 405),
        ),
        RouteSpec(
            "POST", "/api/v1/nodes/{name}/join", join_node, "joinNode",
            "Exchange a join token for a node credential", "nodes",
            params=(Param("name", "path", OBJECT_NAME, "The node's name (a DNS label).", True),),
            replies=(Reply.json(200, "The node's credential and its agent's relay secret",
                                JoinResult),),
            problems=(400, 405, 409),
            description=(
                "Needs a join token (or an admin token). A node that already joined keeps "
                "its credential unless an admin joins it again or revokes node:NAME."
            ),
        ),
    ]
