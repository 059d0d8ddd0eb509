"""A server with authentication on, and one credential of every kind (for the auth tests).

``secured`` serves cara-server's app (no anonymous access) on this test's database, with
user tokens ``view``, ``edit``, ``admin`` and ``join`` and two joined nodes, ``node-a`` and
``node-b``, each Ready with one Running project (``pa`` on node-a, ``pb`` on node-b);
the nodes advertise closed ports on 127.0.0.1, so a relay attempt fails fast (502).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from server_support import Api, make_config, manifest, node_manifest

from caravanserai.server.app import create_app
from caravanserai.server.authn import digest
from caravanserai.store.postgres import PostgresStore
from caravanserai.store.tokens import TokenStore

USER_TOKENS = {
    "view": "cara_view-secret-for-tests",
    "edit": "cara_edit-secret-for-tests",
    "admin": "cara_admin-secret-for-tests",
    "join": "cara_join-secret-for-tests",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Secured:
    api: Api
    tokens: TokenStore
    credentials: dict[str, str] = field(default_factory=dict)  # identity -> token
    agent_secrets: dict[str, str] = field(default_factory=dict)  # node -> relay secret

    async def as_(
        self, who: str | None, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = dict(kw.pop("headers", None) or {})
        if who is not None:
            headers.update(bearer(self.credentials[who]))
        if (kw.get("params") or {}).get("watch") == "true":
            # A stream: the status (and a problem) is all we need; leaving closes it.
            async with self.api.session.request(
                method, self.api.url(path), params=kw["params"], headers=headers
            ) as resp:
                problem = await resp.json() if resp.status >= 400 else None
                return resp.status, problem, resp
        return await self.api.call(method, path, body, headers=headers, **kw)

    async def admin(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, decoded, _ = await self.as_("admin", method, path, body, **kw)
        assert status < 300, (status, decoded)
        return decoded

    async def join(self, node: str, who: str = "join") -> dict[str, Any]:
        status, body, _ = await self.as_(who, "POST", f"/api/v1/nodes/{node}/join")
        assert status == 200, body
        self.credentials[node] = body["credential"]
        self.agent_secrets[node] = body["agentSecret"]
        return body  # type: ignore[no-any-return]


async def serve_secured(store: PostgresStore, database_url: str) -> AsyncIterator[Secured]:
    config = make_config(database_url, insecure_allow_anonymous=False)
    server = TestServer(create_app(config, store), host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    tokens = TokenStore(store)
    try:
        for role, secret in USER_TOKENS.items():
            await tokens.create(role, role, digest(secret))
        secured = Secured(Api(server, session, store, config), tokens, dict(USER_TOKENS))
        for node, project, port in (("node-a", "pa", 1), ("node-b", "pb", 2)):
            await secured.join(node)
            await secured.admin("POST", "/api/v1/nodes", node_manifest(node))
            network = {"ip": "127.0.0.1", "agentPort": port}
            await secured.admin("POST", f"/api/v1/nodes/{node}/heartbeat",
                                {"state": "Ready", "network": network})
            await secured.admin("POST", "/api/v1/projects", manifest(project))
            await secured.admin("PATCH", f"/api/v1/projects/{project}/status",
                                {"phase": "Scheduled", "nodeRef": node})
            await secured.admin("PATCH", f"/api/v1/projects/{project}/status",
                                {"phase": "Running"})
        await secured.admin("POST", "/api/v1/leases", {
            "apiVersion": "caravanserai/v1", "kind": "Lease",
            "metadata": {"name": "test-lease"}, "spec": {},
        })
        yield secured
    finally:
        await session.close()
        await server.close()
