"""One write path: the same scenario driven over HTTP and through the in-process client
(the controller manager's) leaves identical stored objects and identical events; and the
batch binding route binds many projects in one call, skipping stale ones."""

from __future__ import annotations

import re
from typing import Any

from test_controllers_harness import serve  # type: ignore[import-not-found]

from caravanserai.api.binding import Binding, BindingOutcome
from caravanserai.api.node import Heartbeat, NodeState
from caravanserai.api.project import ProjectPhase
from caravanserai.client.interface import Client
from caravanserai.server.inprocess import InProcessClient
from caravanserai.server.state import RECORDER, REGISTRIES
from caravanserai.store.postgres import PostgresStore

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def project_manifest(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"services": [{"name": "web", "image": "busybox:latest"}]},
    }


async def scenario(c: Client) -> list[str]:
    """create → bind → Running → delete (202) → Terminated → delete (204); the results."""
    seen: list[str] = []
    await c.nodes.create({"metadata": {"name": "n1"}, "spec": {"hostname": "n1"}})
    await c.nodes.heartbeat("n1", Heartbeat(state=NodeState.READY))
    p = await c.projects.create(project_manifest("web"))
    seen.append(str(p.status.phase))
    [result] = await c.projects.bind(
        [Binding(name="web", node="n1", resource_version=p.metadata.resource_version)]
    )
    seen.append(str(result.outcome))
    await c.projects.patch_status("web", ProjectPhase.RUNNING, "Started", "all up")
    terminating = await c.projects.delete("web")
    assert terminating is not None
    seen.append(str(terminating.status.phase))
    await c.projects.patch_status("web", ProjectPhase.TERMINATED, "Removed")
    seen.append(str(await c.projects.delete("web")))
    await c.nodes.delete("n1")
    return seen


def normalise(value: Any, base: int) -> Any:
    """Timestamps and uids differ between runs; revisions are compared relative to the
    run's first one."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "uid":
                out[k] = "<uid>"
            elif k == "resourceVersion" and isinstance(v, str) and v.isdigit():
                out[k] = int(v) - base
            else:
                out[k] = normalise(v, base)
        return out
    if isinstance(value, list):
        return [normalise(v, base) for v in value]
    if isinstance(value, str) and _TIMESTAMP.match(value):
        return "<time>"
    return value


async def events_between(store: PostgresStore, after: int, upto: int) -> list[Any]:
    events = []
    async with store.watch(None, after) as w:
        while True:
            ev = await w.next(timeout=10)
            assert ev is not None, "event missing"
            events.append(
                (ev.revision - after, ev.type, ev.kind, ev.name,
                 normalise(ev.object, after), normalise(ev.old_object, after))
            )
            if ev.revision >= upto:
                return events


async def test_http_and_in_process_writes_store_the_same(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, with_manager=False) as server:
        # The writes themselves are compared, revision for revision: the server's Events
        # about them (written in the background, from the HTTP handlers) are left out.
        await server.app[RECORDER].aclose()
        in_process = InProcessClient(server.app[REGISTRIES])
        runs = []
        for client in (server.client, in_process):
            before = await store.current_revision()
            outcomes = await scenario(client)
            after = await store.current_revision()
            runs.append((outcomes, await events_between(store, before, after)))
        (http_outcomes, http_events), (local_outcomes, local_events) = runs
        assert http_outcomes == local_outcomes == ["Pending", "Bound", "Terminating", "None"]
        assert len(http_events) == 9
        assert http_events == local_events


async def test_batch_binding_binds_many_and_reports_stale_ones(
    store: PostgresStore, database_url: str
) -> None:
    async with serve(store, database_url, with_manager=False) as server:
        c = server.client
        await c.nodes.create({"metadata": {"name": "n1"}, "spec": {"hostname": "n1"}})
        made = [await c.projects.create(project_manifest(f"p{i}")) for i in range(5)]
        await c.projects.patch_status("p4", ProjectPhase.TERMINATING, "Gone")
        before = await store.current_revision()
        results = await c.projects.bind(
            [Binding(name=p.metadata.name, node="n1",
                     resource_version=p.metadata.resource_version) for p in made[:4]]
            + [Binding(name="p4", node="n1"), Binding(name="ghost", node="n1"),
               Binding(name="p1", node="n1", resource_version=made[1].metadata.resource_version),
               Binding(name="p2", node="Not A Node")]
        )
        outcomes = [(r.name, r.outcome) for r in results]
        assert outcomes == [
            ("p0", BindingOutcome.BOUND), ("p1", BindingOutcome.BOUND),
            ("p2", BindingOutcome.BOUND), ("p3", BindingOutcome.BOUND),
            ("p4", BindingOutcome.CONFLICT),  # not Pending: binding never moves a project
            ("ghost", BindingOutcome.NOT_FOUND),
            ("p1", BindingOutcome.CONFLICT),  # already bound above: its version moved on
            ("p2", BindingOutcome.INVALID),
        ]
        # Each binding is its own write: one revision and one event each, in order.
        revisions = [int(r.resource_version or 0) for r in results[:4]]
        assert revisions == [before + 1, before + 2, before + 3, before + 4]
        events = await events_between(store, before, before + 4)
        assert [e[3] for e in events] == ["p0", "p1", "p2", "p3"]
        for i in range(4):
            p = await c.projects.get(f"p{i}")
            assert p.status.phase is ProjectPhase.SCHEDULED and p.status.node_ref == "n1"
