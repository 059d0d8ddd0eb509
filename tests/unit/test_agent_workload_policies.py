"""Restart policies with CrashLoopBackOff, start order and health-gated routing, driven
through the reconciler against the in-memory Docker of test_agent_reconciler and a fake
clock (no waiting)."""

from __future__ import annotations

from typing import Any

import pytest
from test_agent_reconciler import (  # type: ignore[import-not-found]
    NODE,
    FakeClient,
    FakeDocker,
    FakeInformer,
    FakeProjects,
    make,
)

from agent.proxy import RouteTable
from agent.reconciler import ProjectReconciler, ReconcilerSettings
from agent.restarts import RestartTracker, backoff_delay, wants_restart
from agent.runtime import ContainerInfo
from caravanserai.api import ProjectPhase, get_condition
from caravanserai.api.project import RestartPolicy
from caravanserai.informer.clock import FakeClock

BUSYBOX = "cara-test/busybox:latest"


class HealthDocker(FakeDocker):
    """FakeDocker with health states and exit times."""

    def _info(self, c: dict[str, Any]) -> ContainerInfo:
        base = super()._info(c)
        return ContainerInfo(
            id=base.id, name=base.name, labels=base.labels, state=base.state,
            exit_code=base.exit_code, ips=base.ips, health=c.get("health"),
            finished_at=c.get("finished_at"),
        )

    async def start_container(self, container_id: str) -> None:
        await super().start_container(container_id)
        c = self.containers[container_id]
        c["exit_code"] = None
        if c.get("checked"):
            c["health"] = "starting"

    def crash(self, name: str, code: int, at: str) -> None:
        c = self.by_name(name)
        c["state"], c["exit_code"], c["finished_at"] = "exited", code, at


@pytest.fixture
def env() -> tuple[HealthDocker, FakeProjects, RouteTable, ProjectReconciler, FakeClock]:
    docker, projects, routes, clock = HealthDocker(), FakeProjects(), RouteTable(), FakeClock()
    reconciler = ProjectReconciler(
        settings=ReconcilerSettings(node=NODE, stop_timeout=1),
        runtime=docker,  # type: ignore[arg-type]
        client=FakeClient(projects),  # type: ignore[arg-type]
        projects=FakeInformer(projects),  # type: ignore[arg-type]
        routes=routes,
        clock=clock,
    )
    return docker, projects, routes, reconciler, clock


def test_policies_decide_like_compose() -> None:
    assert not wants_restart(RestartPolicy.NO, 1)
    assert wants_restart(RestartPolicy.ALWAYS, 0)
    assert wants_restart(RestartPolicy.UNLESS_STOPPED, 0)
    assert wants_restart(RestartPolicy.ON_FAILURE, 3)
    assert not wants_restart(RestartPolicy.ON_FAILURE, 0)
    assert [backoff_delay(n, 10, 300) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]


def test_backoff_resets_after_a_long_run() -> None:
    clock = FakeClock()
    tracker = RestartTracker(clock, base=10, cap=300, reset_after=600)
    tracker.started("u", "web")
    for n, expected in enumerate([10, 20, 40]):
        backoff = tracker.on_exit("u", "web", f"exit-{n}", 1)
        assert backoff is not None and backoff.delay == expected
        assert tracker.on_exit("u", "web", f"exit-{n}", 1) is not None  # same exit: waits
        clock._now += expected
        assert tracker.on_exit("u", "web", f"exit-{n}", 1) is None
        tracker.restarted("u", "web")
    clock._now += 600  # ran ten minutes
    backoff = tracker.on_exit("u", "web", "exit-late", 1)
    assert backoff is not None and backoff.delay == 10
    assert tracker.count("u", "web") == 3


async def test_crashing_service_backs_off_and_restarts(env: Any) -> None:
    docker, projects, _routes, rec, clock = env
    projects.put(make(services=[{"name": "web", "image": BUSYBOX, "restart": "always"}],
                      volumes=[], ingress=[]))
    await rec.reconcile("shop")
    assert projects.items["shop"].status.phase == ProjectPhase.RUNNING
    delays = []
    for n in range(3):
        docker.crash("shop-web", 3, f"t{n}")
        docker.actions.clear()
        result = await rec.reconcile("shop")
        p = projects.items["shop"]
        assert p.status.phase == ProjectPhase.RUNNING  # never Failed while restarting
        cond = get_condition(p.status.conditions, "ContainersRunning")
        assert cond is not None and cond.reason == "CrashLoopBackOff"
        assert "exit code 3" in (cond.message or "")
        assert docker.actions == []  # waiting out the backoff
        assert result is not None and result.requeue_after is not None
        delays.append(result.requeue_after)
        clock._now += result.requeue_after
        await rec.reconcile("shop")
        assert docker.actions == ["start shop-web"]
        web = projects.items["shop"].status.services[0]
        assert web.state == "running" and web.restart_count == n + 1
    assert delays == [10, 20, 40]


async def test_on_failure_leaves_a_clean_exit_alone(env: Any) -> None:
    docker, projects, _routes, rec, _clock = env
    projects.put(make(services=[{"name": "job", "image": BUSYBOX, "restart": "on-failure"}],
                      volumes=[], ingress=[]))
    await rec.reconcile("shop")
    docker.crash("shop-job", 0, "t0")
    docker.actions.clear()
    await rec.reconcile("shop")
    assert docker.actions == []
    assert projects.items["shop"].status.phase == ProjectPhase.FAILED


async def test_start_order_waits_for_a_healthy_dependency(env: Any) -> None:
    docker, projects, _routes, rec, _clock = env
    projects.put(make(
        services=[
            {"name": "web", "image": BUSYBOX,
             "dependsOn": [{"service": "db", "condition": "service_healthy"}]},
            {"name": "db", "image": BUSYBOX,
             "healthcheck": {"test": ["CMD", "true"], "interval": "1s"}},
        ],
        volumes=[],
        ingress=[{"name": "www", "host": "shop", "target": {"service": "web", "port": 80}}],
    ))
    result = await rec.reconcile("shop")
    assert docker.actions[-2:] == ["create shop-db", "start shop-db"]
    assert not any("shop-web" in a for a in docker.actions)
    p = projects.items["shop"]
    cond = get_condition(p.status.conditions, "ContainersRunning")
    assert cond is not None and cond.reason == "WaitingForDependencies"
    assert "web: waiting for db to be healthy" in (cond.message or "")
    assert result is not None and result.requeue_after is not None
    db = docker.by_name("shop-db")
    db["health"] = "healthy"
    await rec.reconcile("shop")
    assert docker.actions[-2:] == ["create shop-web", "start shop-web"]
    p = projects.items["shop"]
    assert p.status.phase == ProjectPhase.RUNNING
    ready = get_condition(p.status.conditions, "Ready")
    assert ready is not None and ready.status.value == "True"


async def test_unhealthy_service_gets_no_traffic(env: Any) -> None:
    docker, projects, routes, rec, _clock = env
    projects.put(make(
        services=[{"name": "web", "image": BUSYBOX,
                   "healthcheck": {"test": ["CMD-SHELL", "exit 1"]}}],
        volumes=[],
        ingress=[{"name": "www", "host": "shop", "target": {"service": "web", "port": 80}}],
    ))
    await rec.reconcile("shop")
    docker.by_name("shop-web")["health"] = "starting"
    await rec.reconcile("shop")
    p = projects.items["shop"]
    assert p.status.phase == ProjectPhase.RUNNING
    ready = get_condition(p.status.conditions, "Ready")
    assert ready is not None and ready.status.value == "False"
    assert "web (health: starting)" in (ready.message or "")
    assert routes.not_ready("shop", "web") == "health: starting"
    assert routes.ip("shop", "web") is None
    assert p.status.services[0].health == "starting" and p.status.services[0].ready is False
    docker.by_name("shop-web")["health"] = "healthy"
    await rec.reconcile("shop")
    assert routes.not_ready("shop", "web") is None
    assert routes.ip("shop", "web") is not None


async def test_completed_dependency_is_success(env: Any) -> None:
    docker, projects, _routes, rec, _clock = env
    projects.put(make(
        services=[
            {"name": "migrate", "image": BUSYBOX},
            {"name": "web", "image": BUSYBOX, "dependsOn": [
                {"service": "migrate", "condition": "service_completed_successfully"}]},
        ],
        volumes=[], ingress=[],
    ))
    await rec.reconcile("shop")
    assert not any("shop-web" in a for a in docker.actions)
    docker.crash("shop-migrate", 0, "t0")
    await rec.reconcile("shop")
    assert docker.actions[-1] == "start shop-web"
    assert projects.items["shop"].status.phase == ProjectPhase.RUNNING
