"""JSON merge patch (RFC 7396) on projects and nodes, through the typed client and raw HTTP,
against a real server and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from test_client_support import (
    node_manifest,
    project_manifest,
    running_server,
)

from caravanserai.api import Conflict, Invalid, NotFound, ProjectPhase
from caravanserai.client import CaravanseraiClient
from caravanserai.server.routes_patch import merge_patch
from caravanserai.store.postgres import PostgresStore


def test_merge_patch_follows_rfc_7396_appendix_a() -> None:
    cases = [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ]
    for target, patch, want in cases:
        before = repr(target)
        assert merge_patch(target, patch) == want, (target, patch)
        assert repr(target) == before  # the target is not modified


@pytest.fixture
async def client(store: PostgresStore) -> AsyncIterator[CaravanseraiClient]:
    async with running_server(store) as server, CaravanseraiClient(server.url) as c:
        yield c


async def test_patch_sets_and_removes_labels_and_keeps_status(client: CaravanseraiClient) -> None:
    created = await client.projects.create(project_manifest("web", {"a": "1", "b": "2"}))
    await client.nodes.create(node_manifest("n1"))
    await client.projects.patch_status("web", ProjectPhase.SCHEDULED, node_ref="n1")
    patched = await client.projects.patch(
        "web", {"metadata": {"labels": {"a": "9", "b": None, "c": "3"}, "annotations": {"x": "y"}}}
    )
    assert patched.metadata.labels == {"a": "9", "c": "3"}
    assert patched.metadata.annotations == {"x": "y"}
    assert patched.status.phase is ProjectPhase.SCHEDULED
    assert patched.status.node_ref == "n1"
    assert patched.metadata.generation == created.metadata.generation  # spec unchanged


async def test_patch_of_spec_is_validated_like_a_put(client: CaravanseraiClient) -> None:
    await client.projects.create(project_manifest("web"))
    with pytest.raises(Invalid):
        await client.projects.patch("web", {"spec": {"services": "not a list"}})
    unchanged = await client.projects.get("web")
    assert unchanged.spec.services[0].image == "nginx:alpine"
    changed = await client.projects.patch(
        "web", {"spec": {"services": [{"name": "web", "image": "busybox"}]}}
    )
    assert changed.spec.services[0].image == "busybox"
    assert (changed.metadata.generation or 0) > (unchanged.metadata.generation or 0)


async def test_resource_version_precondition(client: CaravanseraiClient) -> None:
    created = await client.projects.create(project_manifest("web"))
    rv = created.metadata.resource_version
    assert rv is not None
    await client.projects.patch("web", {"metadata": {"labels": {"a": "1"}}}, resource_version=rv)
    with pytest.raises(Conflict):
        await client.projects.patch(
            "web", {"metadata": {"labels": {"a": "2"}}}, resource_version=rv
        )
    assert (await client.projects.get("web")).metadata.labels == {"a": "1"}


async def test_nodes_are_patched_and_missing_objects_are_404(client: CaravanseraiClient) -> None:
    await client.nodes.create(node_manifest("n1"))
    node = await client.nodes.patch("n1", {"metadata": {"labels": {"zone": "eu"}}})
    assert node.metadata.labels == {"zone": "eu"}
    with pytest.raises(NotFound):
        await client.nodes.patch("nope", {"metadata": {"labels": {"zone": "eu"}}})


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", b'{"metadata": {"labels": {"a": "1"}}}', 415),
        ("application/merge-patch+json", b'{"status": {"phase": "Running"}}', 400),
        ("application/merge-patch+json", b'{"metadata": {"name": "other"}}', 400),
        ("application/merge-patch+json", b'{"metadata": {"uid": "x"}}', 400),
        ("application/merge-patch+json", b"[1, 2]", 400),
        ("application/merge-patch+json", b"{not json", 400),
        ("application/merge-patch+json", b'{"metadata": {"labels": {"a": 1}}}', 422),
    ],
)
async def test_bad_patches_are_problems_and_change_nothing(
    store: PostgresStore, content_type: str, body: bytes, status: int
) -> None:
    async with running_server(store) as server, CaravanseraiClient(server.url) as c:
        before = await c.projects.create(project_manifest("web"))
        async with (
            aiohttp.ClientSession() as http,
            http.patch(
                f"{server.url}/api/v1/projects/web",
                data=body,
                headers={"Content-Type": content_type},
            ) as resp,
        ):
            assert resp.status == status, await resp.text()
            assert resp.content_type == "application/problem+json"
        after = await c.projects.get("web")
        assert after.metadata.resource_version == before.metadata.resource_version
