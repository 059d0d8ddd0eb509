"""Resource-aware placement: requests summed per project, fit per node with reasons counted,
spread among the nodes that fit, and the scheduler saying Unschedulable until room appears."""

from __future__ import annotations

from typing import Any

from test_controllers_support import (  # type: ignore[import-not-found]
    FakeClient,
    NullLog,
    informer_of,
    node,
)

from caravanserai.api import Project
from caravanserai.api.node import Node, NodeState
from caravanserai.api.requests import Amount, project_request
from controllers.placement import Candidate, place
from controllers.scheduler import LoadTracker, Scheduler, occupied_node, schedulable

GI = 1 << 30


def proj(name: str, *memory: str, phase: str = "Pending", node_ref: str | None = None,
         rv: int = 1) -> Project:
    return Project.model_validate({
        "metadata": {"name": name, "resourceVersion": str(rv)},
        "spec": {"services": [
            {"name": f"s{i}", "image": "x", "resources": {"requests": {"memory": m}}}
            for i, m in enumerate(memory)
        ] or [{"name": "s", "image": "x"}]},
        "status": {"phase": phase, "nodeRef": node_ref},
    })


def sized(name: str, memory: str, cpu: str = "4", **kw: Any) -> Node:
    n = node(name, **kw)
    n.status.allocatable = {"cpu": cpu, "memory": memory}
    return n


def test_request_sums_services_and_defaults_to_limits() -> None:
    p = Project.model_validate({"metadata": {"name": "p"}, "spec": {"services": [
        {"name": "a", "image": "x", "resources": {"requests": {"memory": "512Mi", "cpus": 0.5}}},
        {"name": "b", "image": "x", "resources": {"limits": {"memory": "1g", "cpus": "250m"}}},
        {"name": "c", "image": "x"},
    ]}})
    assert project_request(p) == Amount(0.75, (512 << 20) + GI)


def test_place_counts_why_nothing_fits() -> None:
    nodes = [sized("a", "1Gi"), sized("b", "1Gi"), sized("c", "8Gi", unschedulable=True)]
    candidates = [Candidate(n.metadata.name, n, 0, Amount(0, 0)) for n in nodes]
    assert place(Amount(0, 2 * GI), candidates) == (
        None, "0/3 nodes fit: 2 insufficient memory, 1 cordoned")
    # Fits on both a and b: the spread rule (least loaded, then name) decides.
    loaded = [Candidate("a", nodes[0], 3, Amount()), Candidate("b", nodes[1], 1, Amount())]
    assert place(Amount(0, GI // 2), loaded)[0] == "b"
    # What is already allocated counts.
    full = [Candidate("a", nodes[0], 0, Amount(0, GI)), Candidate("b", nodes[1], 5, Amount())]
    assert place(Amount(0, GI // 2), full)[0] == "b"


def _scheduler(projects: list[Project], nodes: list[Node]) -> tuple[Scheduler, FakeClient]:
    client, tracker = FakeClient(), LoadTracker()
    for n in nodes:
        tracker.set_node(n.metadata.name, schedulable(n))
    for p in projects:
        tracker.set_request(p.metadata.name, project_request(p))
        tracker.observe(p.metadata.name, occupied_node(p), int(p.metadata.resource_version or 0))
    s = Scheduler(client, informer_of(Project, *projects),  # type: ignore[arg-type]
                  informer_of(Node, *nodes), tracker, NullLog())
    return s, client


async def test_projects_go_where_they_fit_and_the_rest_is_unschedulable() -> None:
    small, big = sized("small", "1Gi"), sized("big", "4Gi")
    projects = [proj(f"p{i}", "1Gi") for i in range(4)]
    projects.append(proj("huge", "8Gi"))
    s, client = _scheduler(projects, [small, big])
    placed = []
    for i in range(4):
        await s.reconcile(f"p{i}")
        call = client.calls[-1]
        placed.append(call.kwargs.get("node_ref"))
    # Spread while both fit, then only big has room; the 5th GiB fits nowhere.
    assert sorted(placed[:2]) == ["big", "small"]
    assert placed[2:] == ["big", "big"]
    assert s.tracker.allocated("big") == Amount(0, 3 * GI)
    await s.reconcile("huge")
    written = client.calls[-1].args[0]
    assert written.metadata.name == "huge"
    cond = written.status.conditions[-1]
    assert (cond.reason, cond.message) == ("Unschedulable", "0/2 nodes fit: 2 insufficient memory")


async def test_projects_without_requests_still_spread() -> None:
    s, client = _scheduler([proj("a"), proj("b")], [sized("n1", "1Gi"), sized("n2", "1Gi")])
    await s.reconcile("a")
    await s.reconcile("b")
    assert {c.kwargs["node_ref"] for c in client.calls} == {"n1", "n2"}
    assert all(c.method == "projects.bind" for c in client.calls)


def test_tracker_frees_allocation_when_a_project_leaves() -> None:
    t = LoadTracker()
    t.set_node("n", True)
    t.set_request("p", Amount(1, GI))
    t.observe("p", "n", 2)
    assert t.allocated("n") == Amount(1, GI)
    t.set_request("p", Amount(2, GI))  # spec changed in place
    assert t.allocated("n") == Amount(2, GI)
    t.observe("p", None, 3)
    assert t.allocated("n") == Amount()
    t.observe("p", "n", 4)
    t.forget("p")
    assert t.allocated("n") == Amount()
    assert node("x", NodeState.READY).status.state is NodeState.READY


def test_describe_node_shows_allocated_against_allocatable() -> None:
    from cli.describe import describe_node

    n = sized("n", "4Gi", cpu="2")
    on_node = [proj("a", "1Gi", phase="Running", node_ref="n"),
               proj("b", "1Gi", phase="Scheduled", node_ref="n"),
               proj("gone", "8Gi", phase="Terminated", node_ref="n")]
    text = describe_node(n, projects=on_node)
    assert "Allocated Resources:" in text
    section = text.split("Allocated Resources:")[1].splitlines()
    line = next(ln for ln in section if ln.strip().startswith("memory"))
    assert line.split()[1:] == ["2Gi", "(50%)", "4Gi"]


def test_system_reserved_lowers_allocatable() -> None:
    import pytest

    from agent.config import ConfigError, parse_reserved
    from agent.node import allocatable_of

    reserved = parse_reserved("cpu=0.5, memory=1Gi")
    assert allocatable_of({"cpu": "2", "memory": "4194304Ki"}, reserved) == {
        "cpu": "1.5", "memory": "3145728Ki"}
    assert allocatable_of({"cpu": "1"}, {"cpu": "4"}) == {"cpu": "0"}
    for bad in ("cpu", "disk=1", "memory=lots"):
        with pytest.raises(ConfigError):
            parse_reserved(bad)
