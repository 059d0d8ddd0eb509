"""The node credential's write rules live in the registry's mutators: checked against the
object as stored inside the write's own transaction (not against what the request claims,
nor against a read made before it), so a rebind cannot slip in between."""

from __future__ import annotations

import pytest

from caravanserai.api.node import Node
from caravanserai.api.problems import Forbidden
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.registry import Registries
from caravanserai.store.postgres import PostgresStore


def _project(name: str) -> Project:
    return Project.model_validate({
        "metadata": {"name": name},
        "spec": {"services": [{"name": "web", "image": "busybox:latest"}]},
    })


async def test_status_writes_follow_the_stored_binding(store: PostgresStore) -> None:
    registries = Registries(store)
    projects = registries.projects
    await projects.create(_project("web"))
    await projects.patch_phase("web", ProjectPhase.SCHEDULED, node_ref="node-a")

    # node-b's write claims the project is its own: the stored binding (node-a) decides.
    claimed = await projects.get("web")
    claimed.status.node_ref = "node-b"
    claimed.status.phase = ProjectPhase.RUNNING
    with pytest.raises(Forbidden, match="not bound to this node"):
        await projects.update_status(claimed, as_node="node-b")
    with pytest.raises(Forbidden, match="not bound to this node"):
        await projects.patch_phase("web", ProjectPhase.RUNNING, as_node="node-b")
    assert (await projects.get("web")).status.phase is ProjectPhase.SCHEDULED

    # node-a may report, but not hand the project to another node.
    moved = await projects.get("web")
    moved.status.node_ref = "node-b"
    with pytest.raises(Forbidden, match="another node"):
        await projects.update_status(moved, as_node="node-a")
    await projects.patch_phase("web", ProjectPhase.RUNNING, as_node="node-a")
    stored = await projects.get("web")
    assert (stored.status.phase, stored.status.node_ref) == (ProjectPhase.RUNNING, "node-a")


async def test_a_node_keeps_its_unschedulable_as_the_admin_set_it(store: PostgresStore) -> None:
    nodes = Registries(store).nodes
    await nodes.create(Node.model_validate({"metadata": {"name": "node-a"}, "spec": {}}))
    cordoned = await nodes.get("node-a")
    cordoned.spec.unschedulable = True
    await nodes.update(cordoned)  # the admin (no node identity)

    uncordon = await nodes.get("node-a")
    uncordon.spec.unschedulable = False
    with pytest.raises(Forbidden, match="unschedulable"):
        await nodes.update(uncordon, as_node="node-a")
    labelled = await nodes.get("node-a")
    labelled.metadata.labels["zone"] = "eu"
    await nodes.update(labelled, as_node="node-a")  # other changes are its own
    stored = await nodes.get("node-a")
    assert stored.spec.unschedulable and stored.metadata.labels == {"zone": "eu"}
