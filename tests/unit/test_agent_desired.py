"""From a project spec to Docker objects: names, labels, create config, config hash, diff."""

from __future__ import annotations

from typing import Any

import pytest

from agent.desired import SpecError, diff_services, plan_project
from caravanserai.api import Project


def project(**spec: Any) -> Project:
    base: dict[str, Any] = {
        "services": [
            {"name": "db", "image": "cara-test/busybox:latest",
             "env": [{"name": "A", "value": "1"}],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            {"name": "web", "image": "cara-test/web:latest",
             "ports": [{"containerPort": 80, "hostPort": 18080}]},
        ],
        "volumes": [{"name": "data", "type": "Ephemeral"}],
    }
    base.update(spec)
    return Project.model_validate(
        {"metadata": {"name": "shop", "uid": "u1", "generation": 1}, "spec": base}
    )


def by_service(p: Project) -> dict[str, Any]:
    return {c.service: c for c in plan_project(p, "node-1").containers}


def test_plan_names_and_labels() -> None:
    plan = plan_project(project(), "node-1")
    assert plan.network == "cara-shop"
    assert [v.name for v in plan.volumes] == ["cara-shop-data"]
    assert plan.volumes[0].labels["cara.project"] == "shop"
    db = plan.containers[0]
    assert db.name == "shop-db"
    assert db.labels["cara.project"] == "shop"
    assert db.labels["cara.service"] == "db"
    assert db.labels["cara.node"] == "node-1"
    assert db.labels["cara.uid"] == "u1"
    assert db.labels["cara.config-hash"] == db.config_hash


def test_create_config() -> None:
    c = by_service(project())
    db = c["db"].create_config()
    assert db["Env"] == ["A=1"]
    assert db["HostConfig"]["Mounts"] == [
        {"Type": "volume", "Source": "cara-shop-data", "Target": "/data"}
    ]
    assert db["NetworkingConfig"]["EndpointsConfig"]["cara-shop"]["Aliases"] == ["db"]
    assert db["HostConfig"]["RestartPolicy"] == {"Name": "no"}
    assert "Cmd" not in db and "Entrypoint" not in db
    web = c["web"].create_config()
    assert web["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostPort": "18080"}]}
    assert web["ExposedPorts"] == {"80/tcp": {}}


def test_command_and_entrypoint() -> None:
    p = project(services=[{"name": "job", "image": "x", "command": ["sh", "-c", "exit 3"],
                           "entrypoint": []}])
    cfg = by_service(p)["job"].create_config()
    assert cfg["Cmd"] == ["sh", "-c", "exit 3"]
    assert cfg["Entrypoint"] == []


def test_hash_is_stable_and_per_service() -> None:
    a, b = by_service(project()), by_service(project())
    assert a["db"].config_hash == b["db"].config_hash
    assert a["db"].config_hash != a["web"].config_hash


@pytest.mark.parametrize(
    "change",
    [
        {"image": "cara-test/busybox:v2"},
        {"env": [{"name": "A", "value": "2"}]},
        {"command": ["sleep", "1"]},
        {"volumeMounts": [{"name": "data", "mountPath": "/other"}]},
        {"ports": [{"containerPort": 5432}]},
    ],
)
def test_a_change_changes_only_that_service(change: dict[str, Any]) -> None:
    before = project()
    services = [s.to_wire() for s in before.spec.services]
    services[0] = {**services[0], **change}
    after = project(services=services)
    old, new = by_service(before), by_service(after)
    assert old["db"].config_hash != new["db"].config_hash
    assert old["web"].config_hash == new["web"].config_hash


def test_undeclared_volume_is_a_volume_error() -> None:
    p = project(volumes=[])
    with pytest.raises(SpecError) as info:
        plan_project(p, "n")
    assert info.value.reason == "VolumeError"
    assert "data" in info.value.message


def test_diff_services() -> None:
    plan = plan_project(project(), "n")
    hashes = {c.service: c.config_hash for c in plan.containers}
    assert diff_services(plan, {}) == (["db", "web"], [], [], [])
    assert diff_services(plan, hashes) == ([], [], ["db", "web"], [])
    changed = {"db": "other", "web": hashes["web"], "old": "x"}
    assert diff_services(plan, changed) == ([], ["db"], ["web"], ["old"])


def _web_on(port: int) -> list[dict[str, Any]]:
    return [{"name": "web", "image": "cara-test/web:latest",
             "ports": [{"containerPort": 80, "hostPort": port}]}]


def test_containers_get_no_new_privileges_and_node_default_limits() -> None:
    from agent.desired import HostPolicy

    plain = plan_project(project(), "n").containers[0]
    assert plain.create_config()["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
    assert "Memory" not in plain.create_config()["HostConfig"]
    policy = HostPolicy(default_memory_bytes=256 * 1024**2, default_pids_limit=200)
    limited = plan_project(project(), "n", policy).containers[0]
    host = limited.create_config()["HostConfig"]
    assert (host["Memory"], host["PidsLimit"]) == (256 * 1024**2, 200)
    # A node's limits changing recreates the containers (the hash covers them).
    assert limited.config_hash != plain.config_hash


def test_host_ports_of_the_agent_and_below_the_minimum_are_refused() -> None:
    from agent.desired import HostPolicy

    policy = HostPolicy(reserved_ports=frozenset({9090, 8081}), min_host_port=1024)
    with pytest.raises(SpecError) as err:
        plan_project(project(services=_web_on(9090)), "n", policy)
    assert err.value.reason == "PortConflict" and "agent's own" in err.value.message
    with pytest.raises(SpecError) as err:
        plan_project(project(services=_web_on(80)), "n", policy)
    assert err.value.reason == "PortConflict" and "minimum host port 1024" in err.value.message
    # Allowed for a listed project, and anything at or above the minimum.
    allowed = HostPolicy(min_host_port=1024, low_port_projects=frozenset({"shop"}))
    assert plan_project(project(services=_web_on(80)), "n", allowed).containers
    assert plan_project(project(services=_web_on(1024)), "n", policy).containers
