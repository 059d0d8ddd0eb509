"""The token routes and node joining (``/api/v1/tokens``, ``/api/v1/nodes/{name}/join``)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from caravanserai.api.tokens import JoinResult, TokenCreate, TokenCreated, TokenInfo, TokenList

if TYPE_CHECKING:
    from caravanserai.client.http import CaravanseraiClient


class TokenClient:
    """``client.tokens``: create (the secret is in the answer, only then), list, revoke."""

    def __init__(self, client: CaravanseraiClient) -> None:
        self._client = client

    async def create(self, spec: TokenCreate) -> TokenCreated:
        _, data = await self._client.request("POST", "/api/v1/tokens", body=spec.to_wire())
        return TokenCreated.model_validate(data)

    async def list(self) -> list[TokenInfo]:
        _, data = await self._client.request("GET", "/api/v1/tokens")
        return TokenList.model_validate(data).items

    async def revoke(self, name: str) -> None:
        await self._client.request("DELETE", f"/api/v1/tokens/{quote(name, safe='')}")

    async def join(self, node: str) -> JoinResult:
        """Exchange this client's (join) token for ``node``'s credential and relay secret."""
        _, data = await self._client.request("POST", f"/api/v1/nodes/{quote(node)}/join")
        return JoinResult.model_validate(data)
