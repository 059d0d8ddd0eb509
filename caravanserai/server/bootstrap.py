"""The first admin token: created on the first start on an empty token table (as Nomad's
``acl bootstrap`` or k3s's node-token), from ``CARA_BOOTSTRAP_TOKEN`` or freshly generated."""

from __future__ import annotations

from caravanserai.api.problems import AlreadyExists
from caravanserai.logging import get_logger
from caravanserai.server.authn import Role, digest, new_token
from caravanserai.server.config import ServerConfig
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.tokens import TokenStore

log = get_logger("caravanserai.server.bootstrap")

BOOTSTRAP_TOKEN_NAME = "bootstrap-admin"


async def ensure_bootstrap_token(config: ServerConfig, store: PostgresStore) -> str | None:
    """The new admin token when this start created it (to show once), else None.

    Nothing is created when the server runs without authentication, when ``CARA_API_TOKEN``
    already gives an admin, or when any token exists. Replicas starting together on an empty
    database race on the name: exactly one creates it.
    """
    if config.insecure_allow_anonymous:
        return None
    tokens = TokenStore(store)
    if config.api_token and not config.bootstrap_token:
        return None
    if await tokens.count() > 0:
        if config.bootstrap_token:
            log.info("bootstrap.skipped", reason="tokens exist; CARA_BOOTSTRAP_TOKEN ignored")
        return None
    token = config.bootstrap_token or new_token()
    try:
        await tokens.create(BOOTSTRAP_TOKEN_NAME, Role.ADMIN.value, digest(token))
    except AlreadyExists:
        return None
    log.info("bootstrap.admin_token_created", name=BOOTSTRAP_TOKEN_NAME)
    return None if config.bootstrap_token else token
