#!/usr/bin/env python
"""Benchmark the agent: apply → Running for a 3-service project, against the same Docker
operations scripted directly with aiodocker, as a ratio.

    .venv/bin/python hack/bench/apply.py                    # embedded PostgreSQL
    .venv/bin/python hack/bench/apply.py --rounds 10 --dsn postgresql://...@host/postgres

Needs a Docker engine with the test images (``eval "$(hack/docker-up.sh)"`` and
``hack/build-images.sh``); nothing is pulled.

Each round, alternately:

- **cara**: ``POST /api/v1/projects`` of a project with three services (two web servers
  and a worker mounting an Ephemeral volume) → the scheduler (in ``cara-server``) places
  it on the one node → ``cara-agent`` sees it on its watch, creates the network, the
  volume and the containers, and reports ``Running`` → this script sees ``Running`` on its
  own watch. Timed from just before the POST to that event.
- **direct**: the same Docker objects created by hand with aiodocker, as tightly as a
  script can: create the network and the volume, then create+start the three containers
  concurrently, then inspect them until all run. Timed end to end.

Both are then removed (not timed). One warm-up round of each is not counted. Figures:
each round, the medians, and the ratio median(cara) / median(direct). A 2-core machine runs
PostgreSQL, the server, the agent, dockerd and this script at once: compare changes on one
machine, not absolute speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiodocker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import BIN, free_port, postgres, scratch_database, terminate

from caravanserai.api import NodeState, ProjectPhase
from caravanserai.client import CaravanseraiClient, ListOptions

WEB = "cara-test/web:latest"
BUSYBOX = "cara-test/busybox:latest"
FOREVER = "trap 'exit 0' TERM; sleep 2147483647 & wait"


def services() -> list[dict[str, Any]]:
    return [
        {"name": "web", "image": WEB, "env": [{"name": "ROLE", "value": "front"}]},
        {"name": "api", "image": WEB, "env": [{"name": "ROLE", "value": "api"}]},
        {"name": "worker", "image": BUSYBOX, "command": ["sh", "-c", FOREVER],
         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
    ]


@contextlib.contextmanager
def program(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[None]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield
    finally:
        terminate(proc, timeout=15)


async def wait_for(probe: Any, what: str, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(Exception):
            if result := await probe():
                return result
        if time.monotonic() > deadline:
            raise SystemExit(f"apply.py: timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- cara ---------------------------------------------------------------------------------


async def running_event(api: CaravanseraiClient, name: str, rv: str) -> None:
    options = ListOptions.of(field_selector=f"metadata.name={name}")
    async for event in api.projects.watch(rv, options):
        obj = event.object
        if obj is not None and obj.status.phase == ProjectPhase.RUNNING:
            return
        if obj is not None and obj.status.phase == ProjectPhase.FAILED:
            raise SystemExit(f"apply.py: project {name} failed: {obj.status.conditions}")


async def cara_round(api: CaravanseraiClient, docker: aiodocker.Docker, i: int) -> float:
    name = f"bench-{i}-{uuid.uuid4().hex[:5]}"
    body = {
        "apiVersion": "caravanserai/v1", "kind": "Project", "metadata": {"name": name},
        "spec": {"services": services(), "volumes": [{"name": "data"}]},
    }
    rv = (await api.projects.list(limit=1)).resource_version
    watcher = asyncio.create_task(running_event(api, name, rv))
    await asyncio.sleep(0.05)  # the watch request is on its way
    start = time.perf_counter()
    await api.projects.create(body)
    async with asyncio.timeout(60):
        await watcher
    elapsed = time.perf_counter() - start
    await api.projects.delete(name)

    async def gone() -> bool:
        filters = json.dumps({"label": [f"cara.project={name}"]})
        left = await docker._query_json("containers/json",
                                        params={"all": True, "filters": filters})
        nets = await docker.networks.list(filters={"name": [f"cara-{name}"]})
        vols = (await docker.volumes.list(filters={"label": [f"cara.project={name}"]}))
        return not left and not nets and not vols.get("Volumes")

    await wait_for(gone, f"{name} torn down")
    return elapsed


# -- direct -------------------------------------------------------------------------------


async def direct_round(docker: aiodocker.Docker, i: int) -> float:
    name = f"direct-{i}-{uuid.uuid4().hex[:5]}"
    network, volume = f"cara-{name}", f"cara-{name}-data"
    labels = {"bench": "direct"}
    start = time.perf_counter()
    await docker.networks.create({"Name": network, "Driver": "bridge", "Labels": labels})
    await docker.volumes.create({"Name": volume, "Labels": labels})

    async def run(svc: dict[str, Any]) -> str:
        config: dict[str, Any] = {
            "Image": svc["image"],
            "Hostname": svc["name"],
            "Env": [f"{e['name']}={e['value']}" for e in svc.get("env", [])],
            "Labels": labels,
            "HostConfig": {
                "NetworkMode": network,
                "Mounts": [{"Type": "volume", "Source": volume, "Target": m["mountPath"]}
                           for m in svc.get("volumeMounts", [])],
            },
            "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [svc["name"]]}}},
        }
        if "command" in svc:
            config["Cmd"] = svc["command"]
        container = await docker.containers.create(config, name=f"{name}-{svc['name']}")
        await container.start()
        return str(container.id)

    ids = await asyncio.gather(*(run(s) for s in services()))

    async def all_running() -> bool:
        states = [(await docker.containers.get(c))["State"]["Status"] for c in ids]
        return all(s == "running" for s in states)

    await wait_for(all_running, f"{name} running")
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(docker.containers.container(c).delete(force=True) for c in ids))
    await (await docker.networks.get(network)).delete()
    await (await docker.volumes.get(volume)).delete()
    return elapsed


# -- main ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def system(dsn: str, docker_host: str, logs: Path) -> AsyncIterator[CaravanseraiClient]:
    port, agent_port, proxy_port = free_port(), free_port(), free_port()
    node = f"bench-{uuid.uuid4().hex[:6]}"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("CARA_", "AGENT_", "NODE_", "SERVER_", "PROXY_"))}
    # On loopback only, without tokens: anonymous acts as admin; the agent joins without one.
    server_env = base | {"DATABASE_URL": dsn, "HOST": "127.0.0.1", "PORT": str(port),
                         "DEBUG": "false", "CARA_INSECURE_ALLOW_ANONYMOUS": "true"}
    agent_env = base | {
        "SERVER_URL": f"http://127.0.0.1:{port}", "NODE_NAME": node,
        "DOCKER_HOST": docker_host, "AGENT_LISTEN_HOST": "127.0.0.1",
        "AGENT_LISTEN_PORT": str(agent_port), "PROXY_LISTEN_ADDR": f"127.0.0.1:{proxy_port}",
        "AGENT_ADVERTISE_IP": "127.0.0.1", "HEARTBEAT_INTERVAL": "2s",
        "AGENT_STOP_TIMEOUT": "2s", "DEBUG": "false",
        "AGENT_DATA_DIR": str(logs / "agent-data"),  # its node credential
    }
    with program([str(BIN / "cara-server")], server_env, logs / "server.log"):
        async with CaravanseraiClient(f"http://127.0.0.1:{port}") as api:
            await wait_for(api.healthz, "cara-server")
            with program([str(BIN / "cara-agent")], agent_env, logs / "agent.log"):

                async def ready() -> bool:
                    return (await api.nodes.get(node)).status.state == NodeState.READY

                await wait_for(ready, "the node Ready")
                yield api


async def bench(args: argparse.Namespace, dsn: str, logs: Path) -> None:
    async with aiodocker.Docker(url=args.docker_host) as docker:
        for image in (WEB, BUSYBOX):
            await docker.images.inspect(image)  # run hack/build-images.sh if this fails
        async with system(dsn, args.docker_host, logs) as api:
            cara: list[float] = []
            direct: list[float] = []
            for i in range(args.rounds + 1):
                d = await direct_round(docker, i)
                c = await cara_round(api, docker, i)
                if i == 0:
                    print(f"warm-up   direct {d * 1000:7.1f} ms   cara {c * 1000:7.1f} ms")
                    continue
                direct.append(d)
                cara.append(c)
                print(f"round {i:2d}  direct {d * 1000:7.1f} ms   cara {c * 1000:7.1f} ms"
                      f"   ratio {c / d:4.2f}")
    md, mc = statistics.median(direct), statistics.median(cara)
    print()
    print(f"3-service project, {args.rounds} rounds")
    print(f"  direct aiodocker  median {md * 1000:7.1f} ms   min {min(direct) * 1000:7.1f}"
          f"   max {max(direct) * 1000:7.1f}")
    print(f"  cara apply→Running median {mc * 1000:7.1f} ms   min {min(cara) * 1000:7.1f}"
          f"   max {max(cara) * 1000:7.1f}")
    print(f"  ratio (median cara / median direct): {mc / md:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dsn", help="PostgreSQL superuser DSN (default: embedded)")
    parser.add_argument(
        "--docker-host",
        default=os.environ.get("DOCKER_HOST", "unix:///var/run/cara-docker/cara.sock"),
    )
    parser.add_argument("--logs", type=Path, help="keep the server/agent logs here")
    args = parser.parse_args()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="cara-bench-apply-"))
    logs.mkdir(parents=True, exist_ok=True)
    with postgres(args.dsn) as admin, scratch_database(admin) as dsn:
        asyncio.run(bench(args, dsn, logs))
    if args.logs is None:
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
