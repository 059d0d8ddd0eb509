"""The reconciler against an in-memory Docker and API: converge, adopt, recreate exactly
what changed, failures, teardown, sweeping, and status writes that never fight."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent.desired import ContainerSpec
from agent.proxy import RouteTable
from agent.reconciler import ProjectReconciler, ReconcilerSettings
from agent.runtime import (
    ContainerEvent,
    ContainerInfo,
    EngineInfo,
    ImagePullFailed,
    LabelledObject,
    NameConflict,
    PortConflict,
)
from caravanserai.api import Conflict, NotFound, Project, ProjectPhase, get_condition

NODE = "node-1"


class FakeDocker:
    def __init__(self) -> None:
        self.images: set[str] = {"cara-test/busybox:latest", "cara-test/web:latest"}
        self.pullable: set[str] = set()
        self.pulls: list[str] = []
        self.containers: dict[str, dict[str, Any]] = {}
        self.networks: dict[str, dict[str, str]] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.ports: dict[int, str] = {}
        self.actions: list[str] = []
        self._ids = itertools.count(1)

    async def info(self) -> EngineInfo:
        return EngineInfo("28.0", "1.47", "Debian", "6.1", "x86_64", 2, 2 << 30)

    async def ensure_network(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        if name not in self.networks:
            self.networks[name] = dict(labels)
            self.actions.append(f"network+ {name}")
        return self.networks[name]

    async def list_networks(self, labels: dict[str, str]) -> list[LabelledObject]:
        return [LabelledObject(n, lb) for n, lb in self.networks.items()
                if all(lb.get(k) == v for k, v in labels.items())]

    async def remove_network(self, name: str) -> None:
        if self.networks.pop(name, None) is not None:
            self.actions.append(f"network- {name}")

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        if name not in self.volumes:
            self.volumes[name] = dict(labels)
            self.actions.append(f"volume+ {name}")
        return self.volumes[name]

    async def list_volumes(self, labels: dict[str, str]) -> list[LabelledObject]:
        return [LabelledObject(n, lb) for n, lb in self.volumes.items()
                if all(lb.get(k) == v for k, v in labels.items())]

    async def remove_volume(self, name: str) -> None:
        if self.volumes.pop(name, None) is not None:
            self.actions.append(f"volume- {name}")

    async def image_present(self, image: str) -> bool:
        return image in self.images

    async def ensure_image(self, image: str) -> bool:
        if image in self.images:
            return False
        self.pulls.append(image)
        if image not in self.pullable:
            raise ImagePullFailed(f'failed to pull image "{image}": not found')
        self.images.add(image)
        return True

    def _info(self, c: dict[str, Any]) -> ContainerInfo:
        return ContainerInfo(
            id=c["id"], name=c["name"], labels=c["labels"], state=c["state"],
            exit_code=c.get("exit_code"),
            ips={c["network"]: c["ip"]} if c["state"] == "running" else {},
        )

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [self._info(c) for c in self.containers.values()
                if all(c["labels"].get(k) == v for k, v in labels.items())]

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        for c in self.containers.values():
            if name_or_id in (c["id"], c["name"]):
                return self._info(c)
        return None

    async def create_container(self, spec: ContainerSpec) -> str:
        if any(c["name"] == spec.name for c in self.containers.values()):
            raise NameConflict(spec.name)
        cid = f"c{next(self._ids):04d}" + "0" * 8
        self.containers[cid] = {
            "id": cid, "name": spec.name, "labels": dict(spec.labels), "state": "created",
            "network": spec.network, "ip": f"10.0.0.{len(self.containers) + 2}",
            "ports": [p.host_port for p in spec.ports if p.host_port],
        }
        self.actions.append(f"create {spec.name}")
        return cid

    async def start_container(self, container_id: str) -> None:
        c = self.containers[container_id]
        for port in c["ports"]:
            if self.ports.get(port, container_id) != container_id:
                raise PortConflict(f"Bind for 0.0.0.0:{port} failed: port is already allocated")
        for port in c["ports"]:
            self.ports[port] = container_id
        c["state"] = "running"
        self.actions.append(f"start {c['name']}")

    async def remove_container(self, container_id: str, *, stop_timeout: float) -> None:
        c = self.containers.pop(container_id, None)
        if c is not None:
            self.ports = {p: o for p, o in self.ports.items() if o != container_id}
            self.actions.append(f"remove {c['name']}")

    def container_events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]:
        raise NotImplementedError

    def logs(self, container_id: str, *, follow: bool, tail: str,
             timestamps: bool) -> AsyncIterator[bytes]:
        raise NotImplementedError

    # helpers
    def by_name(self, name: str) -> dict[str, Any]:
        return next(c for c in self.containers.values() if c["name"] == name)


class FakeProjects:
    """Both the informer cache (``get``) and the API (``get``/``update_status``)."""

    def __init__(self) -> None:
        self.items: dict[str, Project] = {}
        self.cache: dict[str, Project] = {}
        self.rv = itertools.count(10)
        self.writes: list[Project] = []
        self.conflict_next = False

    def put(self, p: Project) -> Project:
        p = p.model_copy(deep=True)
        p.metadata.resource_version = str(next(self.rv))
        self.items[p.metadata.name] = p
        self.cache[p.metadata.name] = p
        return p

    async def get(self, name: str) -> Project:
        if name not in self.items:
            raise NotFound(name)
        return self.items[name]

    async def update_status(self, body: Project) -> Project:
        current = self.items.get(body.metadata.name)
        if current is None:
            raise NotFound(body.metadata.name)
        stale = body.metadata.resource_version != current.metadata.resource_version
        if self.conflict_next or stale:
            self.conflict_next = False
            raise Conflict("stale resourceVersion")
        if current.status.phase == ProjectPhase.TERMINATING and body.status.phase not in (
            ProjectPhase.TERMINATING, ProjectPhase.TERMINATED
        ):
            raise Conflict("cannot move from Terminating")
        new = current.model_copy(update={"status": body.status})
        stored = self.put(new)
        self.writes.append(stored)
        return stored


class FakeInformer:
    def __init__(self, projects: FakeProjects) -> None:
        self.projects = projects

    def get(self, name: str) -> Project | None:
        return self.projects.cache.get(name)


class FakeClient:
    def __init__(self, projects: FakeProjects) -> None:
        self.projects = projects


@pytest.fixture
def world() -> tuple[FakeDocker, FakeProjects, RouteTable, ProjectReconciler]:
    docker, projects, routes = FakeDocker(), FakeProjects(), RouteTable()
    reconciler = ProjectReconciler(
        settings=ReconcilerSettings(node=NODE, stop_timeout=1),
        runtime=docker,  # type: ignore[arg-type]
        client=FakeClient(projects),  # type: ignore[arg-type]
        projects=FakeInformer(projects),  # type: ignore[arg-type]
        routes=routes,
    )
    return docker, projects, routes, reconciler


def make(name: str = "shop", *, generation: int = 1, phase: str = "Scheduled",
         uid: str = "u1", services: list[dict[str, Any]] | None = None,
         **spec: Any) -> Project:
    return Project.model_validate({
        "metadata": {"name": name, "uid": uid, "generation": generation},
        "spec": {
            "services": services if services is not None else [
                {"name": "db", "image": "cara-test/busybox:latest",
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "web", "image": "cara-test/web:latest"},
            ],
            "volumes": [{"name": "data"}],
            "ingress": [{"name": "www", "host": "shop", "target": {"service": "web", "port": 80}}],
            **spec,
        },
        "status": {"phase": phase, "nodeRef": NODE},
    })


async def test_converges_a_new_project(world: Any) -> None:
    docker, projects, routes, rec = world
    projects.put(make())
    assert await rec.reconcile("shop") is None
    assert set(docker.networks) == {"cara-shop"}
    assert set(docker.volumes) == {"cara-shop-data"}
    assert {c["name"]: c["state"] for c in docker.containers.values()} == {
        "shop-db": "running", "shop-web": "running"}
    p = projects.items["shop"]
    assert p.status.phase == ProjectPhase.RUNNING
    assert p.status.observed_generation == 1
    cond = get_condition(p.status.conditions, "ContainersRunning")
    assert cond is not None and cond.reason == "ContainersRunning"
    assert [s.state for s in p.status.services] == ["running", "running"]
    assert routes.lookup("shop.dev.cara.local") is not None
    assert routes.ip("shop", "web") is not None


async def test_second_pass_adopts_and_writes_nothing(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make())
    await rec.reconcile("shop")
    docker.actions.clear()
    writes = len(projects.writes)
    await rec.reconcile("shop")
    assert docker.actions == []
    assert len(projects.writes) == writes


async def test_interrupted_run_is_finished_without_duplicates(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make())
    # A previous agent created shop-db and died before starting it or creating shop-web.
    from agent.desired import plan_project

    plan = plan_project(make(), NODE)
    await docker.ensure_network(plan.network, plan.network_labels)
    await docker.create_container(plan.containers[0])
    docker.actions.clear()
    await rec.reconcile("shop")
    assert docker.actions.count("create shop-db") == 0
    assert "start shop-db" in docker.actions and "create shop-web" in docker.actions
    assert len(docker.containers) == 2
    assert projects.items["shop"].status.phase == ProjectPhase.RUNNING


async def test_spec_change_recreates_exactly_the_changed_service(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make())
    await rec.reconcile("shop")
    web_id, db_id = docker.by_name("shop-web")["id"], docker.by_name("shop-db")["id"]
    changed = make(generation=2, phase="Running", services=[
        {"name": "db", "image": "cara-test/busybox:latest",
         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"name": "web", "image": "cara-test/web:latest", "env": [{"name": "V", "value": "2"}]},
    ])
    projects.put(changed)
    docker.actions.clear()
    await rec.reconcile("shop")
    assert docker.actions == ["remove shop-web", "create shop-web", "start shop-web"]
    assert docker.by_name("shop-db")["id"] == db_id
    assert docker.by_name("shop-web")["id"] != web_id
    assert projects.items["shop"].status.observed_generation == 2


async def test_removed_service_and_volume_are_removed(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make())
    await rec.reconcile("shop")
    projects.put(make(generation=2, phase="Running", volumes=[],
                      services=[{"name": "web", "image": "cara-test/web:latest"}]))
    await rec.reconcile("shop")
    assert [c["name"] for c in docker.containers.values()] == ["shop-web"]
    assert docker.volumes == {}


async def test_pull_only_when_missing(world: Any) -> None:
    docker, projects, _, rec = world
    docker.pullable.add("cara-test/new:1")
    projects.put(make(services=[{"name": "a", "image": "cara-test/new:1"}]))
    await rec.reconcile("shop")
    await rec.reconcile("shop")
    assert docker.pulls == ["cara-test/new:1"]


async def test_image_pull_failure(world: Any) -> None:
    docker, projects, routes, rec = world
    projects.put(make(services=[{"name": "app", "image": "myapp:typo"}]))
    await rec.reconcile("shop")
    p = projects.items["shop"]
    assert p.status.phase == ProjectPhase.FAILED
    cond = get_condition(p.status.conditions, "ContainersRunning")
    assert cond is not None and cond.status == "False"
    assert cond.reason == "ImagePullFailed"
    assert cond.message == 'failed to pull image "myapp:typo": not found'
    assert routes.hosts() == {}
    # Failed at its generation: hands off, no second pull.
    await rec.reconcile("shop")
    assert docker.pulls == ["myapp:typo"]


async def test_port_conflict(world: Any) -> None:
    _docker, projects, _, rec = world
    svc = [{"name": "web", "image": "cara-test/web:latest",
            "ports": [{"containerPort": 80, "hostPort": 18080}]}]
    projects.put(make("one", services=svc))
    projects.put(make("two", services=svc, uid="u2"))
    await rec.reconcile("one")
    await rec.reconcile("two")
    assert projects.items["one"].status.phase == ProjectPhase.RUNNING
    two = projects.items["two"]
    assert two.status.phase == ProjectPhase.FAILED
    cond = get_condition(two.status.conditions, "ContainersRunning")
    assert cond is not None and cond.reason == "PortConflict"


async def test_exited_container_is_reported_not_restarted(world: Any) -> None:
    docker, projects, routes, rec = world
    projects.put(make())
    await rec.reconcile("shop")
    web = docker.by_name("shop-web")
    web["state"], web["exit_code"] = "exited", 2
    docker.actions.clear()
    await rec.reconcile("shop")
    p = projects.items["shop"]
    assert p.status.phase == ProjectPhase.FAILED
    cond = get_condition(p.status.conditions, "ContainersRunning")
    assert cond is not None and cond.reason == "ContainerExited"
    assert "web (exit code 2)" in (cond.message or "")
    assert [s.exit_code for s in p.status.services] == [None, 2]
    assert docker.actions == []
    assert routes.hosts() == {}
    # Started again by hand: the project is reported Running again.
    web["state"], web["exit_code"] = "running", None
    await rec.reconcile("shop")
    assert projects.items["shop"].status.phase == ProjectPhase.RUNNING
    assert docker.actions == []


async def test_terminating_removes_everything(world: Any) -> None:
    docker, projects, routes, rec = world
    projects.put(make())
    await rec.reconcile("shop")
    current = projects.items["shop"]
    projects.put(current.model_copy(update={"status": current.status.model_copy(
        update={"phase": ProjectPhase.TERMINATING})}))
    await rec.reconcile("shop")
    assert docker.containers == {} and docker.networks == {} and docker.volumes == {}
    assert projects.items["shop"].status.phase == ProjectPhase.TERMINATED
    assert routes.hosts() == {}


async def test_orphan_is_swept_only_when_the_server_agrees(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make())
    await rec.reconcile("shop")
    # The cache lost it but the server still assigns it here: never sweep.
    del projects.cache["shop"]
    await rec.reconcile("shop")
    assert len(docker.containers) == 2
    # Force-deleted on the server: sweep.
    del projects.items["shop"]
    await rec.reconcile("shop")
    assert docker.containers == {} and docker.networks == {} and docker.volumes == {}


async def test_sweep_leaves_other_nodes_alone(world: Any) -> None:
    docker, _projects, _, rec = world
    await docker.ensure_network("cara-x", {"cara.project": "x", "cara.node": "other"})
    await rec.reconcile("x")
    assert "cara-x" in docker.networks


async def test_status_conflict_is_retried_on_fresh_state(world: Any) -> None:
    _docker, projects, _, rec = world
    projects.put(make())
    projects.conflict_next = True
    await rec.reconcile("shop")
    assert projects.items["shop"].status.phase == ProjectPhase.RUNNING


async def test_never_fights_a_delete(world: Any) -> None:
    _docker, projects, _, rec = world
    p = projects.put(make())
    # The server moved on to Terminating; our cache still says Scheduled.
    terminating = p.model_copy(update={"status": p.status.model_copy(
        update={"phase": ProjectPhase.TERMINATING})})
    stored = projects.put(terminating)
    projects.cache["shop"] = p
    await rec.reconcile("shop")
    assert projects.items["shop"].status.phase == ProjectPhase.TERMINATING
    assert projects.items["shop"].metadata.resource_version == stored.metadata.resource_version


async def test_new_incarnation_does_not_inherit(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make(uid="old"))
    await rec.reconcile("shop")
    old_ids = set(docker.containers)
    projects.put(make(uid="new"))
    await rec.reconcile("shop")
    assert not old_ids & set(docker.containers)
    assert docker.volumes["cara-shop-data"]["cara.uid"] == "new"
    assert docker.networks["cara-shop"]["cara.uid"] == "new"


async def test_waits_for_another_nodes_copy_on_a_shared_engine(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make())
    # The project just moved here; the old node has not swept its network yet.
    await docker.ensure_network("cara-shop", {"cara.project": "shop", "cara.node": "old"})
    result = await rec.reconcile("shop")
    assert result is not None and result.requeue_after
    assert projects.writes == []  # nothing reported: it is not a failure
    await docker.remove_network("cara-shop")  # the old node's sweep
    await rec.reconcile("shop")
    assert projects.items["shop"].status.phase == ProjectPhase.RUNNING


async def test_another_projects_objects_are_never_touched(world: Any) -> None:
    """Projects ``a`` + volume ``b-data`` and ``a-b`` + volume ``data`` meet in
    ``cara-a-b-data``: the second is Failed with NameConflict; the first keeps its data."""
    docker, projects, _, rec = world
    projects.put(make("a", uid="ua", services=[
        {"name": "b-db", "image": "cara-test/busybox:latest",
         "volumeMounts": [{"name": "b-data", "mountPath": "/data"}]}],
        volumes=[{"name": "b-data"}], ingress=[]))
    await rec.reconcile("a")
    assert projects.items["a"].status.phase == ProjectPhase.RUNNING
    before = dict(docker.volumes["cara-a-b-data"])
    projects.put(make("a-b", uid="uab", services=[
        {"name": "db", "image": "cara-test/busybox:latest",
         "volumeMounts": [{"name": "data", "mountPath": "/data"}]}], ingress=[]))
    await rec.reconcile("a-b")
    p = projects.items["a-b"]
    assert p.status.phase == ProjectPhase.FAILED
    assert get_condition(p.status.conditions, "ContainersRunning").reason == "NameConflict"
    assert docker.volumes["cara-a-b-data"] == before
    assert "volume- cara-a-b-data" not in docker.actions


async def test_a_container_of_another_project_is_never_replaced(world: Any) -> None:
    docker, projects, _, rec = world
    projects.put(make("a", uid="ua", services=[
        {"name": "b-c", "image": "cara-test/web:latest"}], volumes=[], ingress=[]))
    await rec.reconcile("a")
    [held] = [cid for cid, c in docker.containers.items() if c["name"] == "a-b-c"]
    projects.put(make("a-b", uid="uab", services=[
        {"name": "c", "image": "cara-test/web:latest"}], volumes=[], ingress=[]))
    await rec.reconcile("a-b")
    p = projects.items["a-b"]
    assert p.status.phase == ProjectPhase.FAILED
    cond = get_condition(p.status.conditions, "ContainersRunning")
    assert cond.reason == "NameConflict" and '"a"' in (cond.message or "")
    assert docker.containers[held]["state"] == "running"


async def test_an_unmanaged_network_of_the_same_name_is_a_name_conflict(world: Any) -> None:
    docker, projects, _, rec = world
    await docker.ensure_network("cara-shop", {})
    projects.put(make())
    await rec.reconcile("shop")
    assert projects.items["shop"].status.phase == ProjectPhase.FAILED
    assert "cara-shop" in docker.networks
