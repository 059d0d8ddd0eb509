"""The Docker engine behind ``Runtime``, with aiodocker.

Every call has a deadline (``op_timeout``; pulls ``pull_timeout``; stops the grace period
plus ``op_timeout``), engine-side failures the user can act on become ``RuntimeFailure``s
with the reason the project's status reports, and errors inside the pull progress stream
(HTTP 200, then ``{"error": ...}``) are detected instead of being drained and ignored.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
import structlog
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from agent.desired import ContainerSpec
from agent.naming import LABEL_PROJECT
from agent.runtime import (
    ContainerEvent,
    ContainerInfo,
    ContainerStartFailed,
    EngineInfo,
    EngineUnavailable,
    ImagePullFailed,
    LabelledObject,
    NameConflict,
    PortConflict,
    RuntimeFailure,
    VolumeError,
)

log = structlog.get_logger("agent.docker")

_EXITED_RE = re.compile(r"^Exited \((-?\d+)\)")
_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)\s*$")
_PORT_CONFLICT_MARKERS = (
    "port is already allocated",
    "address already in use",
    "ports are not available",
)
_VOLUME_MARKERS = ("volume", "mount")


def _label_filters(labels: dict[str, str]) -> dict[str, list[str]]:
    return {"label": [f"{k}={v}" if v else k for k, v in labels.items()]}


def _message(err: DockerError) -> str:
    return str(err.message).strip()


def pull_failure_message(image: str, detail: str) -> str:
    """The seed's shape: ``failed to pull image "myapp:typo": not found``."""
    return f'failed to pull image "{image}": {detail}'


def classify_start_error(message: str) -> RuntimeFailure:
    lowered = message.lower()
    if any(m in lowered for m in _PORT_CONFLICT_MARKERS):
        return PortConflict(message)
    if any(m in lowered for m in _VOLUME_MARKERS):
        return VolumeError(message)
    return ContainerStartFailed(message)


def container_from_summary(data: dict[str, Any]) -> ContainerInfo:
    """A ContainerInfo from one item of ``GET /containers/json`` (no inspect needed)."""
    names = data.get("Names") or [""]
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    exit_code = None
    match = _EXITED_RE.match(data.get("Status") or "")
    if match:
        exit_code = int(match.group(1))
    health_match = _HEALTH_RE.search(data.get("Status") or "")
    health = health_match.group(1).removeprefix("health: ") if health_match else None
    return ContainerInfo(
        id=data["Id"],
        name=names[0].lstrip("/"),
        labels=dict(data.get("Labels") or {}),
        state=str(data.get("State") or "unknown"),
        exit_code=exit_code,
        image=data.get("Image"),
        ips={n: v["IPAddress"] for n, v in networks.items() if v and v.get("IPAddress")},
        health=health,
    )


def container_from_inspect(data: dict[str, Any]) -> ContainerInfo:
    state = data.get("State") or {}
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    status = str(state.get("Status") or "unknown")
    return ContainerInfo(
        id=data["Id"],
        name=str(data.get("Name") or "").lstrip("/"),
        labels=dict((data.get("Config") or {}).get("Labels") or {}),
        state=status,
        exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
        error=state.get("Error") or None,
        image=(data.get("Config") or {}).get("Image"),
        ips={n: v["IPAddress"] for n, v in networks.items() if v and v.get("IPAddress")},
        oom_killed=bool(state.get("OOMKilled")),
        health=(state.get("Health") or {}).get("Status") or None,
        finished_at=state.get("FinishedAt") or None,
    )


async def demultiplex(content: aiohttp.StreamReader, *, tty: bool) -> AsyncIterator[bytes]:
    """Docker's log stream as plain bytes: stdout and stderr frames merged in order.

    Without a TTY every frame is ``[stream, 0, 0, 0, size(4, big endian)] + payload``;
    with one the stream is raw.
    """
    if tty:
        async for chunk in content.iter_any():
            yield chunk
        return
    while True:
        try:
            header = await content.readexactly(8)
        except asyncio.IncompleteReadError:
            return
        (size,) = struct.unpack(">L", header[4:8])
        if size:
            try:
                yield await content.readexactly(size)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    yield exc.partial
                return


class DockerRuntime:
    """``Runtime`` over one aiodocker client; use as an async context manager."""

    def __init__(
        self,
        docker_host: str,
        *,
        op_timeout: float = 30.0,
        pull_timeout: float = 600.0,
    ) -> None:
        self.docker_host = docker_host
        self.op_timeout = op_timeout
        self.pull_timeout = pull_timeout
        self._docker: aiodocker.Docker | None = None

    async def __aenter__(self) -> DockerRuntime:
        self._docker = aiodocker.Docker(url=self.docker_host)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._docker is not None:
            docker, self._docker = self._docker, None
            await docker.close()

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            raise RuntimeError("DockerRuntime used outside its context")
        return self._docker

    async def _call(self, what: str, coro: Any, deadline: float | None = None) -> Any:
        """Await a Docker call under a deadline; an unreachable engine is EngineUnavailable."""
        try:
            async with asyncio.timeout(deadline or self.op_timeout):
                return await coro
        except TimeoutError:
            raise EngineUnavailable(f"docker {what}: no answer within the deadline") from None
        except DockerError as err:
            if err.status == 900:  # aiodocker's "cannot connect"
                raise EngineUnavailable(f"docker {what}: {_message(err)}") from None
            raise
        except aiohttp.ClientError as err:
            raise EngineUnavailable(f"docker {what}: {err}") from None

    # -- engine -----------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            await self._call("ping", self.docker.version(), deadline=min(3.0, self.op_timeout))
        except (EngineUnavailable, DockerError):
            return False
        return True

    async def info(self) -> EngineInfo:
        version = await self._call("version", self.docker.version())
        info = await self._call("info", self.docker.system.info())
        return EngineInfo(
            version=str(version.get("Version", "")),
            api_version=str(version.get("ApiVersion", "")),
            os_image=info.get("OperatingSystem"),
            kernel_version=info.get("KernelVersion"),
            architecture=info.get("Architecture"),
            cpus=info.get("NCPU"),
            memory_bytes=info.get("MemTotal"),
        )

    # -- networks ---------------------------------------------------------------------------

    async def _network_labels(self, name: str) -> dict[str, str] | None:
        try:
            data = await self._call("network inspect", self.docker._query_json(f"networks/{name}"))
        except DockerError as err:
            if err.status == 404:
                return None
            raise
        return dict(data.get("Labels") or {})

    async def ensure_network(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        existing = await self._network_labels(name)
        if existing is not None:
            return existing
        config = {"Name": name, "Driver": "bridge", "Labels": labels, "CheckDuplicate": True}
        try:
            await self._call("network create", self.docker.networks.create(config))
            log.info("network created", network=name, project=labels.get(LABEL_PROJECT))
            return dict(labels)
        except DockerError as err:
            if err.status != 409:
                raise
        # Created meanwhile by someone else: report what is there.
        return await self._network_labels(name) or {}

    async def list_networks(self, labels: dict[str, str]) -> list[LabelledObject]:
        data = await self._call(
            "network list", self.docker.networks.list(filters=_label_filters(labels))
        )
        return [LabelledObject(n["Name"], dict(n.get("Labels") or {})) for n in data]

    async def remove_network(self, name: str) -> None:
        try:
            network = await self._call("network inspect", self.docker.networks.get(name))
            await self._call("network remove", network.delete())
            log.info("network removed", network=name)
        except DockerError as err:
            if err.status != 404:
                raise

    # -- volumes ----------------------------------------------------------------------------

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> dict[str, str]:
        try:
            data = await self._call("volume inspect", self.docker._query_json(f"volumes/{name}"))
            return dict(data.get("Labels") or {})
        except DockerError as err:
            if err.status != 404:
                raise VolumeError(f'volume "{name}": {_message(err)}') from None
        try:
            data = await self._call(
                "volume create",
                self.docker._query_json(
                    "volumes/create", method="POST", data={"Name": name, "Labels": labels}
                ),
            )
        except DockerError as err:
            raise VolumeError(f'cannot create volume "{name}": {_message(err)}') from None
        log.info("volume created", volume=name, project=labels.get(LABEL_PROJECT))
        return dict(data.get("Labels") or {})

    async def list_volumes(self, labels: dict[str, str]) -> list[LabelledObject]:
        data = await self._call(
            "volume list", self.docker.volumes.list(filters=_label_filters(labels))
        )
        return [
            LabelledObject(v["Name"], dict(v.get("Labels") or {}))
            for v in (data.get("Volumes") or [])
        ]

    async def remove_volume(self, name: str) -> None:
        try:
            volume = await self._call("volume inspect", self.docker.volumes.get(name))
            await self._call("volume remove", volume.delete())
            log.info("volume removed", volume=name)
        except DockerError as err:
            if err.status != 404:
                raise

    # -- images -----------------------------------------------------------------------------

    async def image_present(self, image: str) -> bool:
        try:
            await self._call("image inspect", self.docker.images.inspect(image))
            return True
        except DockerError as err:
            if err.status == 404:
                return False
            raise

    async def ensure_image(self, image: str) -> bool:
        if await self.image_present(image):
            return False
        log.info("pulling image", image=image)
        try:
            async with asyncio.timeout(self.pull_timeout):
                async for chunk in self.docker.images.pull(image, stream=True):
                    # aiodocker ≥ 0.24 raises DockerStreamError on these; older versions
                    # yield them, and a silent success would surface later as a confusing
                    # "No such image" at create. Check explicitly either way.
                    error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
                    if error:
                        raise ImagePullFailed(pull_failure_message(image, str(error).strip()))
        except TimeoutError:
            raise ImagePullFailed(
                pull_failure_message(image, f"timed out after {self.pull_timeout:g}s")
            ) from None
        except DockerError as err:
            if err.status == 900:
                raise EngineUnavailable(f"docker pull: {_message(err)}") from None
            raise ImagePullFailed(pull_failure_message(image, _message(err))) from None
        except aiohttp.ClientError as err:
            raise EngineUnavailable(f"docker pull: {err}") from None
        # A stream that ended without an error line is not proof: the image must now exist.
        if not await self.image_present(image):
            raise ImagePullFailed(
                pull_failure_message(image, "the pull ended but the image is not present")
            )
        log.info("image pulled", image=image)
        return True

    # -- containers -------------------------------------------------------------------------

    async def list_containers(self, labels: dict[str, str]) -> list[ContainerInfo]:
        data = await self._call(
            "container list",
            self.docker._query_json(
                "containers/json",
                params={"all": True, "filters": json.dumps(_label_filters(labels))},
            ),
        )
        return [container_from_summary(c) for c in data]

    async def inspect_container(self, name_or_id: str) -> ContainerInfo | None:
        try:
            data = await self._call(
                "container inspect", self.docker._query_json(f"containers/{name_or_id}/json")
            )
        except DockerError as err:
            if err.status == 404:
                return None
            raise
        return container_from_inspect(data)

    async def create_container(self, spec: ContainerSpec) -> str:
        try:
            container = await self._call(
                "container create",
                self.docker.containers.create(spec.create_config(), name=spec.name),
            )
        except DockerError as err:
            message = _message(err)
            if err.status == 409:
                raise NameConflict(f'container name "{spec.name}" is in use: {message}') from None
            if err.status == 404 and "image" in message.lower():
                raise ImagePullFailed(pull_failure_message(spec.image, message)) from None
            if "volume" in message.lower() or "mount" in message.lower():
                raise VolumeError(message) from None
            raise RuntimeFailure(f'cannot create container "{spec.name}": {message}') from None
        log.info("container created", container=spec.name, project=spec.project,
                 service=spec.service)
        return str(container.id)

    async def start_container(self, container_id: str) -> None:
        container = DockerContainer(self.docker, id=container_id)
        try:
            await self._call("container start", container.start())
        except DockerError as err:
            if err.status == 304:  # already started
                return
            raise classify_start_error(_message(err)) from None

    async def remove_container(self, container_id: str, *, stop_timeout: float) -> None:
        container = DockerContainer(self.docker, id=container_id)
        try:
            await self._call(
                "container stop",
                container.stop(t=max(0, round(stop_timeout))),
                deadline=stop_timeout + self.op_timeout,
            )
        except DockerError as err:
            if err.status == 404:
                return
            if err.status != 304:  # 304: not running
                log.warning("container stop failed; removing by force",
                            container=container_id, error=_message(err))
        try:
            await self._call("container remove", container.delete(force=True, v=False))
        except DockerError as err:
            if err.status == 404:
                return
            if err.status == 409 and "already in progress" in _message(err):
                return
            raise

    # -- streams ----------------------------------------------------------------------------

    async def container_events(self, labels: dict[str, str]) -> AsyncIterator[ContainerEvent]:
        filters = {"type": ["container"], **_label_filters(labels)}
        try:
            async with asyncio.timeout(self.op_timeout) as deadline:
                cm = self.docker._query(
                    "events", params={"filters": json.dumps(filters)}, timeout=None
                )
                response = await cm.__aenter__()
                deadline.reschedule(None)
        except TimeoutError:
            raise EngineUnavailable("docker events: no answer within the deadline") from None
        except DockerError as err:
            raise EngineUnavailable(f"docker events: {_message(err)}") from None
        try:
            while True:
                line = await response.content.readline()
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                actor = event.get("Actor") or {}
                yield ContainerEvent(
                    action=str(event.get("Action") or event.get("status") or "").split(":")[0],
                    container_id=str(actor.get("ID") or event.get("id") or ""),
                    labels={
                        k: v for k, v in (actor.get("Attributes") or {}).items()
                        if k.startswith("cara.")
                    },
                )
        finally:
            response.close()
            await cm.__aexit__(None, None, None)

    async def logs(
        self, container_id: str, *, follow: bool, tail: str, timestamps: bool
    ) -> AsyncIterator[bytes]:
        try:
            data = await self._call(
                "container inspect", self.docker._query_json(f"containers/{container_id}/json")
            )
        except DockerError:
            raise
        tty = bool((data.get("Config") or {}).get("Tty"))
        params: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "follow": follow,
            "timestamps": timestamps,
            "tail": tail,
        }
        try:
            async with asyncio.timeout(self.op_timeout) as deadline:
                cm = self.docker._query(
                    f"containers/{container_id}/logs", params=params, timeout=None
                )
                response = await cm.__aenter__()
                deadline.reschedule(None)
        except TimeoutError:
            raise EngineUnavailable("docker logs: no answer within the deadline") from None
        try:
            async for chunk in demultiplex(response.content, tty=tty):
                yield chunk
        finally:
            response.close()
            await cm.__aexit__(None, None, None)
