"""Bearer-token authentication (CARA_API_TOKEN): the API is closed, probes stay open, and
the in-process controllers still work (they call the API with the same token)."""

from __future__ import annotations

import aiohttp
import pytest
from test_controllers_harness import (  # type: ignore[import-not-found]
    a_project,
    manager_settings,
    ready_node,
    serve,
    wait_phase,
)

from caravanserai.api.problems import NotFound, Unauthorized
from caravanserai.api.project import ProjectPhase
from caravanserai.client.http import CaravanseraiClient
from caravanserai.store.postgres import PostgresStore

TOKEN = "s3cret-token"


async def test_token_closes_the_api_but_not_the_probes(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(
        store, database_url, manager_settings(("scheduler",)), api_token=TOKEN
    ) as server, aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with http.get(f"{server.url}/api/v1/projects", headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert resp.content_type == "application/problem+json"
                assert (await resp.json())["status"] == 401
        for path in ("/api/healthz", "/api/readyz", "/metrics", "/api/v1/openapi.json"):
            async with http.get(f"{server.url}{path}") as resp:
                assert resp.status == 200, path

        async with CaravanseraiClient(server.url) as anonymous:
            with pytest.raises(Unauthorized):
                await anonymous.projects.create(a_project("nope"))
        # The right token works, and the leader's controllers (which call the API
        # in-process) are let through too: the project gets scheduled.
        await ready_node(server.client, "n1")
        await server.client.projects.create(a_project("web"))
        project = await wait_phase(server.client, "web", ProjectPhase.SCHEDULED)
        assert project.status.node_ref == "n1"
        with pytest.raises(NotFound):  # the refused create wrote nothing
            await server.client.projects.get("nope")


async def test_insecure_allow_anonymous_means_open(
    store: PostgresStore, database_url: str
) -> None:
    async with (
        serve(store, database_url, with_manager=False) as server,
        CaravanseraiClient(server.url) as anonymous,
    ):
        await anonymous.projects.create(a_project("open"))
