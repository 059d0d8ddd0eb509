"""The node's identity: its credential for the server's API and the secret the server's relay
presents to this agent, obtained once by joining and kept in the data directory.

Joining exchanges a join token (``CARA_JOIN_TOKEN``; an admin token such as the server's
``CARA_API_TOKEN`` works too) for a credential bound to this node's name. From then on the
agent uses only that credential: it can read the projects bound to this node and write their
status and its own Node, nothing else. The file is written 0600, atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from caravanserai.api.problems import CaravanseraiError, NotFound, Unauthorized
from caravanserai.client import CaravanseraiClient
from caravanserai.client.errors import RequestTimeout, ServerUnreachable
from caravanserai.client.http import ConnectionLost

log = structlog.get_logger("agent.identity")

# Waiting for a server that is not up yet: 0.5 s doubling to 10 s, for as long as it takes
# (as the heartbeat would); a refusal (401/403/409) ends the agent with one line instead.
RETRY_FIRST, RETRY_MAX = 0.5, 10.0
_TRANSIENT = (ServerUnreachable, RequestTimeout, ConnectionLost)


class JoinError(Exception):
    """The server refused to admit this node; the message says why and what to do."""


@dataclass(frozen=True)
class NodeIdentity:
    server: str
    node: str
    credential: str
    agent_secret: str


def identity_path(data_dir: Path, node: str) -> Path:
    return data_dir / "nodes" / f"{node}.json"


def load_identity(path: Path, server: str, node: str) -> NodeIdentity | None:
    """The stored identity for this server and node, or None (missing, unreadable, other)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        identity = NodeIdentity(**data)
    except (OSError, ValueError, TypeError):
        return None
    if identity.server != server or identity.node != node:
        return None
    return identity


def save_identity(path: Path, identity: NodeIdentity) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".identity-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(asdict(identity), f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def _still_valid(
    identity: NodeIdentity, ssl_context: ssl.SSLContext | None
) -> bool | None:
    """True/False when the server says so; None when it cannot be asked right now."""
    async with CaravanseraiClient(identity.server, token=identity.credential, timeout=10,
                                  ssl_context=ssl_context) as client:
        try:
            await client.nodes.get(identity.node)
        except NotFound:
            return True  # allowed to ask: the credential is good (the Node is not there yet)
        except Unauthorized:
            return False
        except _TRANSIENT:
            return None
    return True


async def obtain_identity(
    *,
    server: str,
    node: str,
    data_dir: Path,
    bootstrap_token: str | None,
    ssl_context: ssl.SSLContext | None = None,
) -> NodeIdentity:
    """The stored identity if the server still accepts it, else join (and store) a new one."""
    path = identity_path(data_dir, node)
    stored = load_identity(path, server, node)
    if stored is not None:
        valid = await _still_valid(stored, ssl_context)
        if valid is not False:
            return stored  # None: the server is away; the stored credential is our best
        log.warning("node credential rejected by the server; joining again", node=node)
    delay = RETRY_FIRST
    while True:
        async with CaravanseraiClient(server, token=bootstrap_token, timeout=10,
                                      ssl_context=ssl_context) as client:
            try:
                result = await client.tokens.join(node)
                break
            except _TRANSIENT as exc:
                log.info("server not reachable; will retry joining", error=str(exc),
                         retry_in=delay)
            except Unauthorized as exc:
                hint = ("set CARA_JOIN_TOKEN (caractrl token create NAME --role join)"
                        if not bootstrap_token else "the join token was not accepted")
                raise JoinError(f"cannot join as node {node!r}: {exc.detail}; {hint}") from None
            except CaravanseraiError as exc:
                raise JoinError(f"cannot join as node {node!r}: {exc.detail or exc}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)
    identity = NodeIdentity(server, node, result.credential, result.agent_secret)
    save_identity(path, identity)
    log.info("joined the cluster", node=node, credential_file=str(path))
    return identity
