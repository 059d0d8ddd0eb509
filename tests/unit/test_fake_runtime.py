"""The hollow node's in-memory runtime: what the reconciler relies on."""

from __future__ import annotations

import random

import pytest

from agent.config import ConfigError, load_config
from agent.desired import ContainerSpec
from agent.fake_runtime import FakeRuntime
from agent.runtime import ContainerStartFailed


def spec(name: str = "p-web") -> ContainerSpec:
    return ContainerSpec(project="p", service="web", name=name, image="busybox", env=(),
                         command=None, entrypoint=None, mounts=(), ports=(), network="cara-p",
                         labels={"caravanserai.project": "p", "caravanserai.node": "n1"})


async def test_containers_start_after_the_latency_and_are_found_by_label() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    rt = FakeRuntime(start_latency=0.5, sleep=sleep)
    cid = await rt.create_container(spec())
    assert (await rt.inspect_container("p-web")).state == "created"  # type: ignore[union-attr]
    await rt.start_container(cid)
    assert slept == [0.5]
    info = await rt.inspect_container(cid)
    assert info is not None and info.state == "running"
    assert [c.id for c in await rt.list_containers({"caravanserai.project": "p"})] == [cid]
    assert await rt.list_containers({"caravanserai.project": "q"}) == []
    await rt.remove_container(cid, stop_timeout=1)
    assert await rt.inspect_container("p-web") is None


async def test_failure_rate_fails_starts_as_docker_would() -> None:
    rt = FakeRuntime(failure_rate=1.0, rng=random.Random(1))
    cid = await rt.create_container(spec())
    with pytest.raises(ContainerStartFailed):
        await rt.start_container(cid)
    assert (await rt.inspect_container(cid)).state == "exited"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        FakeRuntime(failure_rate=1.5)


def test_agent_config_selects_the_fake_runtime() -> None:
    config = load_config(environ={"AGENT_RUNTIME": "fake", "AGENT_FAKE_START_LATENCY": "250ms",
                                  "AGENT_FAKE_FAILURE_RATE": "0.1"})
    assert (config.runtime, config.fake_start_latency, config.fake_failure_rate) == (
        "fake", 0.25, 0.1)
    with pytest.raises(ConfigError, match="runtime"):
        load_config(environ={"AGENT_RUNTIME": "podman"})
    with pytest.raises(ConfigError, match="fake_failure_rate"):
        load_config(environ={"AGENT_FAKE_FAILURE_RATE": "2"})
