"""The Compose-like service fields: quantities, validation with paths, Docker config."""

from __future__ import annotations

from typing import Any

import pytest

from agent.desired import plan_project
from caravanserai.api import Project
from caravanserai.api.problems import Invalid
from caravanserai.api.quantities import (
    format_memory,
    parse_cpus,
    parse_duration,
    parse_memory,
)
from caravanserai.api.validation import parse_resource


@pytest.mark.parametrize(("text", "expected"), [
    ("512Mi", 512 << 20), ("1Gi", 1 << 30), ("512m", 512 << 20), ("1g", 1 << 30),
    ("1.5gb", 3 << 29), ("500M", 500_000_000), ("1024", 1024), (2048, 2048), ("64Ki", 65536),
])
def test_memory_forms(text: Any, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "1x", "-1", True, "1.2.3"])
def test_bad_memory(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory(bad)


def test_cpus_and_durations() -> None:
    assert parse_cpus(0.5) == 0.5
    assert parse_cpus("2") == 2.0
    assert parse_cpus("250m") == 0.25
    with pytest.raises(ValueError):
        parse_cpus("2Gi")
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    for bad in ("", "10", "1x", "s10"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_memory(512 << 20) == "512Mi"


def manifest(*services: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "caravanserai/v1", "kind": "Project", "metadata": {"name": "p"},
            "spec": {"services": list(services)}}


def errors(m: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(Invalid) as info:
        parse_resource(m)
    return {e.field: e.message for e in info.value.errors}


def test_dependency_cycles_and_unknown_services_are_422_with_paths() -> None:
    errs = errors(manifest(
        {"name": "a", "image": "x", "dependsOn": [{"service": "b"}]},
        {"name": "b", "image": "x", "dependsOn": [{"service": "c"}, {"service": "nope"}]},
        {"name": "c", "image": "x", "dependsOn": [{"service": "a"}, {"service": "c"}]},
    ))
    assert errs["spec.services[0].dependsOn"] == "dependency cycle: a -> b -> c -> a"
    assert errs["spec.services[1].dependsOn[1].service"] == (
        'service "nope" is not declared in spec.services')
    assert errs["spec.services[2].dependsOn[1].service"] == "a service cannot depend on itself"


def test_bad_restart_healthcheck_and_resources() -> None:
    errs = errors(manifest({
        "name": "a", "image": "x", "restart": "sometimes",
        "healthcheck": {"test": ["RUN", "x"], "interval": "often"},
        "resources": {"limits": {"memory": "lots", "cpus": 0}, "requests": {"cpus": "x"}},
        "dependsOn": [{"service": "a", "condition": "service_ready"}],
    }))
    assert "spec.services[0].restart" in errs
    assert errs["spec.services[0].healthcheck.test[0]"] == 'must be "CMD", "CMD-SHELL" or "NONE"'
    assert "duration" in errs["spec.services[0].healthcheck.interval"]
    assert "spec.services[0].resources.limits.memory" in errs
    assert errs["spec.services[0].resources.limits.cpus"] == "must be greater than 0"
    assert "spec.services[0].resources.requests.cpus" in errs
    assert "spec.services[0].dependsOn[0].condition" in errs


def test_requests_may_not_exceed_limits() -> None:
    errs = errors(manifest({"name": "a", "image": "x", "resources": {
        "limits": {"memory": "64Mi"}, "requests": {"memory": "1Gi"}}}))
    assert errs == {"spec.services[0].resources.requests.memory":
                    "must not exceed resources.limits.memory"}


def test_limits_and_healthcheck_reach_docker() -> None:
    project = parse_resource(manifest({
        "name": "a", "image": "x", "restart": "always",
        "healthcheck": {"test": ["CMD", "true"], "interval": "2s", "timeout": "1s",
                        "retries": 3, "startPeriod": "500ms"},
        "resources": {"limits": {"cpus": 0.5, "memory": "64m", "pids": 50}},
    }))
    assert isinstance(project, Project)
    spec = plan_project(project, "n").containers[0]
    config = spec.create_config()
    assert config["HostConfig"]["NanoCpus"] == 500_000_000
    assert config["HostConfig"]["Memory"] == 64 << 20
    assert config["HostConfig"]["PidsLimit"] == 50
    assert config["HostConfig"]["RestartPolicy"] == {"Name": "no"}  # the agent restarts
    assert config["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 2_000_000_000,
                                     "Timeout": 1_000_000_000, "StartPeriod": 500_000_000,
                                     "Retries": 3}


def test_restart_policy_change_recreates_nothing_but_limits_do() -> None:
    base = {"name": "a", "image": "x"}

    def digest(extra: dict[str, Any]) -> str:
        project = parse_resource(manifest({**base, **extra}))
        assert isinstance(project, Project)
        return plan_project(project, "n").containers[0].config_hash

    plain = digest({})
    assert digest({"restart": "always"}) == plain
    assert digest({"resources": {"limits": {"memory": "64Mi"}}}) != plain


def test_values_that_would_overflow_docker_are_refused() -> None:
    errs = errors(manifest({"name": "a", "image": "x",
                            "healthcheck": {"test": ["CMD", "true"], "interval": "9999999h",
                                            "retries": 1 << 40},
                            "resources": {"limits": {"cpus": 1e300, "memory": "9999999Ti",
                                                     "pids": 1 << 40}}}))
    assert set(errs) == {
        "spec.services[0].healthcheck.interval", "spec.services[0].healthcheck.retries",
        "spec.services[0].resources.limits.cpus", "spec.services[0].resources.limits.memory",
        "spec.services[0].resources.limits.pids"}


def test_service_healthy_needs_a_healthcheck() -> None:
    errs = errors(manifest(
        {"name": "web", "image": "x",
         "dependsOn": [{"service": "db", "condition": "service_healthy"}]},
        {"name": "db", "image": "x"},
    ))
    assert errs == {"spec.services[0].dependsOn[0].condition": 'service "db" has no healthcheck'}
