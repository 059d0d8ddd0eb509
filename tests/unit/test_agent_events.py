"""The agent's Events: Pulling/Pulled/Created/Started on a fresh deploy, a warning named
after the failure (ImagePullFailed, NameConflict…), one BackOff per crash (not per recheck),
Unhealthy when a healthcheck turns unhealthy, Killing on teardown."""

from __future__ import annotations

import pytest
from test_agent_reconciler import (  # type: ignore[import-not-found]
    NODE,
    FakeClient,
    FakeInformer,
    FakeProjects,
    make,
)
from test_agent_workload_policies import HealthDocker  # type: ignore[import-not-found]

from agent.proxy import RouteTable
from agent.reconciler import ProjectReconciler, ReconcilerSettings
from caravanserai.api import ProjectPhase
from caravanserai.api.event import Event
from caravanserai.informer.clock import FakeClock
from caravanserai.informer.recorder import EventRecorder

BUSYBOX = "cara-test/busybox:latest"


class Events:
    def __init__(self) -> None:
        self.written: list[Event] = []

    async def record(self, event: Event) -> Event:
        self.written.append(event)
        return event


class EventClient:
    def __init__(self) -> None:
        self.events = Events()


class Env:
    def __init__(self) -> None:
        self.docker, self.projects, self.clock = HealthDocker(), FakeProjects(), FakeClock()
        self.sink = EventClient()
        self.recorder = EventRecorder(self.sink, "cara-agent", NODE, clock=self.clock)  # type: ignore[arg-type]
        self.rec = ProjectReconciler(
            settings=ReconcilerSettings(node=NODE, stop_timeout=1),
            runtime=self.docker,  # type: ignore[arg-type]
            client=FakeClient(self.projects),  # type: ignore[arg-type]
            projects=FakeInformer(self.projects),  # type: ignore[arg-type]
            routes=RouteTable(),
            clock=self.clock,
            recorder=self.recorder,
        )

    async def events(self) -> list[tuple[str, str, int]]:
        assert await self.recorder.flush(timeout=None)
        out = [(e.type.value, e.reason, e.count) for e in self.sink.events.written]
        self.sink.events.written.clear()
        return out


@pytest.fixture
def env() -> Env:
    return Env()


async def test_a_fresh_deploy_reports_pull_create_start(env: Env) -> None:
    env.docker.pullable.add("cara-test/new:1")
    env.projects.put(make(services=[{"name": "a", "image": "cara-test/new:1"}],
                          volumes=[], ingress=[]))
    await env.rec.reconcile("shop")
    assert await env.events() == [
        ("Normal", "Pulling", 1), ("Normal", "Pulled", 1),
        ("Normal", "Created", 1), ("Normal", "Started", 1),
    ]
    await env.rec.reconcile("shop")
    assert await env.events() == []  # nothing happened, nothing reported


async def test_messages_name_the_container_and_the_source(env: Env) -> None:
    env.projects.put(make(services=[{"name": "web", "image": BUSYBOX}], volumes=[], ingress=[]))
    await env.rec.reconcile("shop")
    assert await env.recorder.flush(timeout=None)
    started = next(e for e in env.sink.events.written if e.reason == "Started")
    assert started.message == "Started container shop-web"
    assert started.involved_object.kind == "Project" and started.involved_object.name == "shop"
    assert started.involved_object.uid == "u1"
    assert (started.reporting_component, started.reporting_instance) == ("cara-agent", NODE)


async def test_a_failure_is_a_warning_named_by_its_reason(env: Env) -> None:
    env.projects.put(make(services=[{"name": "app", "image": "myapp:typo"}],
                          volumes=[], ingress=[]))
    await env.rec.reconcile("shop")
    assert env.projects.items["shop"].status.phase == ProjectPhase.FAILED
    events = await env.events()
    assert ("Warning", "ImagePullFailed", 1) in events


async def test_one_backoff_per_crash_not_per_recheck(env: Env) -> None:
    env.projects.put(make(services=[{"name": "web", "image": BUSYBOX, "restart": "always"}],
                          volumes=[], ingress=[]))
    await env.rec.reconcile("shop")
    await env.events()
    for n in range(2):
        env.docker.crash("shop-web", 3, f"t{n}")
        result = await env.rec.reconcile("shop")
        await env.rec.reconcile("shop")  # a recheck during the same backoff
        assert result is not None and result.requeue_after is not None
        env.clock._now += result.requeue_after
        await env.rec.reconcile("shop")  # restarted
    events = await env.events()
    backoffs = [e for e in events if e[1] == "BackOff"]
    # Both crashes arrive aggregated or as two writes: two occurrences in all.
    assert sum(count for _, _, count in backoffs) == 2
    assert all(t == "Warning" for t, _, _ in backoffs)
    assert sum(count for _, r, count in events if r == "Started") == 2


async def test_unhealthy_once_per_change(env: Env) -> None:
    env.projects.put(make(services=[{"name": "web", "image": BUSYBOX,
                                     "healthcheck": {"test": ["CMD-SHELL", "exit 1"]}}],
                          volumes=[], ingress=[]))
    await env.rec.reconcile("shop")
    web = env.docker.by_name("shop-web")
    web["health"] = "unhealthy"
    await env.rec.reconcile("shop")
    await env.rec.reconcile("shop")
    events = await env.events()
    assert [(t, r, c) for t, r, c in events if r == "Unhealthy"] == [("Warning", "Unhealthy", 1)]
    web["health"] = "healthy"
    await env.rec.reconcile("shop")
    web["health"] = "unhealthy"
    await env.rec.reconcile("shop")
    assert [r for _, r, _ in await env.events()] == ["Unhealthy"]


async def test_teardown_reports_killing(env: Env) -> None:
    env.projects.put(make(services=[{"name": "web", "image": BUSYBOX}], volumes=[], ingress=[]))
    await env.rec.reconcile("shop")
    await env.events()
    current = env.projects.items["shop"]
    env.projects.put(current.model_copy(update={"status": current.status.model_copy(
        update={"phase": ProjectPhase.TERMINATING})}))
    await env.rec.reconcile("shop")
    assert await env.recorder.flush(timeout=None)
    [killing] = env.sink.events.written
    assert killing.reason == "Killing" and "shop-web" in killing.message
