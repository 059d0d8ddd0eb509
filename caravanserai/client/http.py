"""The typed async HTTP client of the Caravanserai API (aiohttp).

::

    async with CaravanseraiClient("http://localhost:8080") as c:
        project = await c.projects.get("web")
        async for event in c.projects.watch(resource_version=project.metadata.resource_version):
            ...

Every call has a timeout (``timeout``, default 10 s). Watches have no total timeout but a
read timeout (``watch_read_timeout``, default 90 s, longer than the server's bookmark
interval) so a stream that goes silent is detected. Errors reported by the server are the
typed errors of :mod:`caravanserai.api.problems` (``NotFound``, ``Conflict``,
``AlreadyExists``, ``Expired``, ``Invalid`` with ``.errors``, ...); a server that cannot be
reached raises :class:`ServerUnreachable` naming its URL.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

import aiohttp
from pydantic import ValidationError

from caravanserai.api.base import API_VERSION
from caravanserai.api.binding import Binding, BindingList, BindingResult, BindingResultList
from caravanserai.api.event import Event
from caravanserai.api.lease import Lease
from caravanserai.api.node import Heartbeat, Node, NodeHeartbeat
from caravanserai.api.problems import CaravanseraiError, Problem, error_from_problem
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.client.errors import (
    ClientError,
    ProtocolError,
    RequestTimeout,
    ServerUnreachable,
)
from caravanserai.client.options import ListOptions, ObjectList
from caravanserai.client.tokens import TokenClient
from caravanserai.client.watch import WatchEvent, parse_event

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_WATCH_READ_TIMEOUT",
    "CaravanseraiClient",
    "ConnectionLost",
    "LeaseClient",
    "ListOptions",
    "NodeClient",
    "ObjectList",
    "ProjectClient",
    "ResourceClient",
]

T = TypeVar("T", bound=Project | Node | Event)

DEFAULT_TIMEOUT = 10.0
DEFAULT_WATCH_READ_TIMEOUT = 90.0
_MAX_LINE = 32 * 1024 * 1024


MERGE_PATCH_JSON = "application/merge-patch+json"


class ConnectionLost(ClientError, ConnectionError):
    """An established connection (usually a watch stream) broke before it ended cleanly."""

    slug = "connection-lost"


class CaravanseraiClient:
    """Async client for every route of ``/api/v1``. Use as an async context manager.

    Args:
        base_url: the server, e.g. ``http://localhost:8080`` (``/api/v1`` is appended).
        token: optional bearer token sent as ``Authorization: Bearer ...``.
        timeout: seconds for every non-watch call (connect + answer).
        watch_read_timeout: seconds a watch stream may stay silent before it is dropped.
        session: an existing ``aiohttp.ClientSession`` to use (not closed by the client).
        ssl_context: TLS settings for an ``https`` server (e.g. trusting a private CA).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        watch_read_timeout: float = DEFAULT_WATCH_READ_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_context
        self.timeout = timeout
        self.watch_read_timeout = watch_read_timeout
        self._headers = {"Accept": "application/json", "User-Agent": "caravanserai-client/0.1"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session = session
        self._owns_session = session is None
        self.projects = ProjectClient(self, Project, "projects")
        self.nodes = NodeClient(self, Node, "nodes")
        self.leases = LeaseClient(self)
        self.tokens = TokenClient(self)
        self.events = EventClient(self, Event, "events")

    async def __aenter__(self) -> CaravanseraiClient:
        self._get_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (if the client created it)."""
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # ssl_context: a private CA (caractrl --certificate-authority, agent --server-ca).
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl is not None else None
            self._session = aiohttp.ClientSession(headers=self._headers, connector=connector)
            self._owns_session = True
        return self._session

    def resource(self, model: type[T]) -> ResourceClient[T]:
        """The typed client for a model class (``Project`` or ``Node``)."""
        if model is Project:
            return self.projects  # type: ignore[return-value]
        if model is Node:
            return self.nodes  # type: ignore[return-value]
        if model is Event:
            return self.events  # type: ignore[return-value]
        raise TypeError(f"no API resource for {model!r}")

    # -- plumbing -------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """The absolute URL of an API path such as ``/api/v1/projects``."""
        return self.base_url + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return ``(status, decoded JSON body or None)`` for 2xx.

        ``content_type`` sends ``body`` as JSON under another media type (a merge patch).

        Raises the typed error of a problem response, :class:`ServerUnreachable`,
        :class:`RequestTimeout` or :class:`ProtocolError`.
        """
        session = self._get_session()
        url = self.url(path)
        what = f"{method} {url}"
        headers = self._headers if not self._owns_session else None
        data: bytes | None = None
        if content_type is not None:
            headers = {**(headers or {}), "Content-Type": content_type}
            data, body = json.dumps(body).encode(), None
        try:
            async with session.request(
                method,
                url,
                params=params,
                json=body,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                if resp.status >= 400:
                    raise await _error_from_response(resp)
                raw = await resp.read()
                if not raw:
                    return resp.status, None
                if "json" not in (resp.content_type or ""):
                    return resp.status, raw.decode(errors="replace")
                try:
                    return resp.status, json.loads(raw)
                except ValueError as exc:
                    raise ProtocolError(f"{what}: invalid JSON in the response") from exc
        except TimeoutError as exc:
            raise RequestTimeout(what, self.timeout) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ServerUnreachable(self.base_url, _reason(exc)) from exc
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionLost(f"{what}: connection lost: {_reason(exc)}") from exc
        except aiohttp.ClientPayloadError as exc:
            raise ConnectionLost(f"{what}: incomplete response: {exc}") from exc

    async def stream(
        self, path: str, params: list[tuple[str, str]]
    ) -> AsyncIterator[dict[str, Any]]:
        """GET a newline-delimited JSON stream and yield each decoded line."""
        session = self._get_session()
        url = self.url(path)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.watch_read_timeout
        )
        try:
            async with session.get(
                url,
                params=params,
                headers=self._headers if not self._owns_session else None,
                timeout=timeout,
            ) as resp:
                if resp.status >= 400:
                    raise await _error_from_response(resp)
                buf = bytearray()
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    start = 0
                    while (end := buf.find(b"\n", start)) >= 0:
                        line = bytes(buf[start:end]).strip()
                        start = end + 1
                        if line:
                            yield _decode_line(line, url)
                    del buf[:start]
                    if len(buf) > _MAX_LINE:
                        raise ProtocolError(f"GET {url}: watch line longer than {_MAX_LINE} bytes")
                if buf.strip():
                    yield _decode_line(bytes(buf).strip(), url)
        except TimeoutError as exc:
            raise RequestTimeout(f"watch {url} (no data)", self.watch_read_timeout) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ServerUnreachable(self.base_url, _reason(exc)) from exc
        except aiohttp.ClientConnectionError as exc:
            raise ConnectionLost(f"watch {url}: connection lost: {_reason(exc)}") from exc
        except aiohttp.ClientPayloadError as exc:
            raise ConnectionLost(f"watch {url}: stream broken: {exc}") from exc

    # -- server-wide routes ---------------------------------------------------------------

    async def version(self) -> dict[str, Any]:
        """``GET /api/v1/version``."""
        _, body = await self.request("GET", "/api/v1/version")
        return dict(body or {})

    async def healthz(self) -> bool:
        """``GET /api/healthz``: True when the server process is alive."""
        await self.request("GET", "/api/healthz")
        return True

    async def readyz(self) -> bool:
        """``GET /api/readyz``: True when the server can reach its database."""
        try:
            await self.request("GET", "/api/readyz")
        except CaravanseraiError as exc:
            if exc.status == 503 and not isinstance(exc, ClientError):
                return False
            raise
        return True


def _dry(dry_run: bool) -> list[tuple[str, str]] | None:
    """The ``dryRun`` query parameter (Kubernetes' name and value)."""
    return [("dryRun", "All")] if dry_run else None


class ResourceClient(Generic[T]):
    """Typed routes of one resource kind (``client.projects`` / ``client.nodes``)."""

    def __init__(self, client: CaravanseraiClient, model: type[T], plural: str) -> None:
        self.client = client
        self.model = model
        self.plural = plural
        self.path = f"/api/v1/{plural}"

    def _parse(self, data: Any) -> T:
        try:
            return cast(T, self.model.model_validate(data))
        except ValidationError as exc:
            raise ProtocolError(f"the server sent an invalid {self.model.__name__}: {exc}") from exc

    def _body(self, obj: T | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(obj, Mapping):
            # A plain manifest may leave out apiVersion/kind: this client knows them.
            body = dict(obj)
            body.setdefault("apiVersion", API_VERSION)
            body.setdefault("kind", self.model.__name__)
            return body
        return obj.to_wire()

    async def create(self, obj: T | Mapping[str, Any], *, dry_run: bool = False) -> T:
        """``POST``: create the object (a model, or a manifest dict whose ``apiVersion`` and
        ``kind`` may be left out); returns the stored object. AlreadyExists on 409,
        Invalid (422, ``.errors`` per field) for a bad object. ``dry_run``: every check,
        no change; returns what would have been stored."""
        _, body = await self.client.request(
            "POST", self.path, body=self._body(obj), params=_dry(dry_run)
        )
        return self._parse(body)

    async def get(self, name: str) -> T:
        """``GET /{name}``; NotFound on 404."""
        _, body = await self.client.request("GET", f"{self.path}/{name}")
        return self._parse(body)

    async def list(
        self,
        options: ListOptions | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        phase: str | Iterable[str] | None = None,
        node_ref: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
    ) -> ObjectList[T]:
        """One page of the list (all of it without ``limit``), consistent at one revision."""
        opts = options or ListOptions.of(
            label_selector=label_selector,
            field_selector=field_selector,
            phase=phase,
            node_ref=node_ref,
        )
        params = opts.to_params()
        if limit is not None:
            params.append(("limit", str(limit)))
        if continue_:
            params.append(("continue", continue_))
        _, body = await self.client.request("GET", self.path, params=params)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise ProtocolError(f"GET {self.path}: not a list response")
        meta = body.get("metadata") or {}
        return ObjectList(
            [self._parse(item) for item in body["items"]],
            str(meta.get("resourceVersion") or ""),
            meta.get("continue") or None,
        )

    async def list_all(
        self, options: ListOptions | None = None, *, page_size: int = 500
    ) -> ObjectList[T]:
        """Every matching object, fetched in pages of ``page_size`` at one revision."""
        items: list[T] = []
        page = await self.list(options, limit=page_size)
        items.extend(page.items)
        while page.continue_:
            page = await self.list(options, limit=page_size, continue_=page.continue_)
            items.extend(page.items)
        return ObjectList(items, page.resource_version)

    async def update(self, obj: T | Mapping[str, Any], *, dry_run: bool = False) -> T:
        """``PUT /{name}``: replace spec, labels and annotations.

        If ``metadata.resourceVersion`` is set it is a precondition: Conflict (409) when the
        stored object has moved on. Returns the stored object (``dry_run``: what would be).
        """
        body = self._body(obj)
        name = body["metadata"]["name"]
        _, data = await self.client.request(
            "PUT", f"{self.path}/{name}", body=body, params=_dry(dry_run)
        )
        return self._parse(data)

    async def patch(
        self, name: str, patch: Mapping[str, Any], *, resource_version: str | None = None
    ) -> T:
        """``PATCH /{name}``: a JSON merge patch (RFC 7396) of labels, annotations and spec.

        ``{"metadata": {"labels": {"a": "1", "b": None}}}`` sets ``a`` and removes ``b``.
        ``resource_version`` (or ``metadata.resourceVersion`` in the patch) is a
        precondition: Conflict (409) when the stored object has moved on.
        """
        body = dict(patch)
        if resource_version is not None:
            body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        _, data = await self.client.request(
            "PATCH", f"{self.path}/{name}", body=body, content_type=MERGE_PATCH_JSON
        )
        return self._parse(data)

    async def update_status(self, obj: T | Mapping[str, Any]) -> T:
        """``PUT /{name}/status``: replace the status (resourceVersion precondition)."""
        body = self._body(obj)
        name = body["metadata"]["name"]
        _, data = await self.client.request("PUT", f"{self.path}/{name}/status", body=body)
        return self._parse(data)

    async def delete(
        self, name: str, *, force: bool = False, dry_run: bool = False
    ) -> T | None:
        """``DELETE /{name}``: None when the object is gone (204); the object when it is
        now Terminating (202) and will be removed once its node has torn it down.
        ``dry_run``: the same answer, nothing deleted."""
        params = ([("force", "true")] if force else []) + (_dry(dry_run) or [])
        status, body = await self.client.request("DELETE", f"{self.path}/{name}", params=params)
        if status == 202 and isinstance(body, dict):
            return self._parse(body)
        return None

    async def watch(
        self,
        resource_version: str | None = None,
        options: ListOptions | None = None,
        *,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent[T]]:
        """Stream typed events after ``resource_version``.

        Without a resource version the stream starts with ADDED for every current object.
        An ERROR event (``event.error``; ``Expired`` when the revision left the log) ends the
        stream. ``timeout_seconds`` asks the server to end the stream cleanly after that
        long. Raises :class:`RequestTimeout` when the stream stays silent for longer than
        the client's ``watch_read_timeout``.
        """
        params = (options or ListOptions()).to_params()
        params.append(("watch", "true"))
        if resource_version:
            params.append(("resourceVersion", resource_version))
        if allow_bookmarks:
            params.append(("allowWatchBookmarks", "true"))
        if timeout_seconds is not None:
            params.append(("timeoutSeconds", str(int(timeout_seconds))))
        async for data in self.client.stream(self.path, params):
            event = parse_event(data, self.model)
            yield event
            if event.error is not None:
                return


class ProjectClient(ResourceClient[Project]):
    """``/api/v1/projects`` plus the phase PATCH."""

    async def patch_status(
        self,
        name: str,
        phase: ProjectPhase | str,
        reason: str | None = None,
        message: str | None = None,
        *,
        node_ref: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """``PATCH /{name}/status`` with ``{phase, reason, message, nodeRef}``.

        ``node_ref`` may only accompany ``Scheduled`` (the scheduler's assignment);
        ``resource_version`` is a precondition. Conflict (409) when the phase machine does
        not allow the transition or the precondition fails.
        """
        body: dict[str, Any] = {"phase": str(phase)}
        if reason is not None:
            body["reason"] = reason
        if message is not None:
            body["message"] = message
        if node_ref is not None:
            body["nodeRef"] = node_ref
        if resource_version is not None:
            body["resourceVersion"] = resource_version
        await self.client.request("PATCH", f"{self.path}/{name}/status", body=body)

    async def bind(self, bindings: Sequence[Binding]) -> list[BindingResult]:
        """``POST /api/v1/bindings``: bind Pending projects to nodes in one transaction.

        One result per binding, in order; a stale one (outcome Conflict/NotFound/Invalid)
        is skipped by the server, not fatal to the others.
        """
        body = BindingList(items=list(bindings)).to_wire()
        _, data = await self.client.request("POST", "/api/v1/bindings", body=body)
        try:
            return BindingResultList.model_validate(data).items
        except ValidationError as exc:
            raise ProtocolError(f"the server sent an invalid binding result: {exc}") from exc


class NodeClient(ResourceClient[Node]):
    """``/api/v1/nodes`` plus the heartbeat."""

    async def heartbeat(self, name: str, heartbeat: Heartbeat | None = None) -> None:
        """``POST /{name}/heartbeat``; NotFound when the node is not registered."""
        body = heartbeat.to_wire() if heartbeat is not None else {}
        await self.client.request("POST", f"{self.path}/{name}/heartbeat", body=body)

    async def last_heartbeat(self, name: str) -> datetime | None:
        """``GET /{name}/heartbeat``: when the node last heartbeated (None: never yet).

        Newer than ``status.lastHeartbeat``, which heartbeats that change nothing leave
        alone for up to a minute."""
        _, data = await self.client.request("GET", f"{self.path}/{name}/heartbeat")
        try:
            return NodeHeartbeat.model_validate(data).last_heartbeat
        except ValidationError as exc:
            raise ProtocolError(f"the server sent an invalid node heartbeat: {exc}") from exc


class EventClient(ResourceClient[Event]):
    """``/api/v1/events``: record (create or aggregate), get, list, watch, delete."""

    async def record(self, event: Event) -> Event:
        """``POST``: the stored event (new, or with the occurrences added to its count)."""
        _, body = await self.client.request("POST", self.path, body=event.to_wire())
        return self._parse(body)

    async def create(self, obj: Event | Mapping[str, Any], *, dry_run: bool = False) -> Event:
        """The same as :meth:`record` (events are aggregated, never refused as existing)."""
        _, body = await self.client.request(
            "POST", self.path, body=self._body(obj), params=_dry(dry_run)
        )
        return self._parse(body)

    async def delete(
        self,
        name: str,
        *,
        force: bool = False,
        dry_run: bool = False,
        resource_version: str | None = None,
    ) -> None:
        """``DELETE /{name}`` (``resource_version``: only that version; 409 otherwise)."""
        params = _dry(dry_run) or []
        if resource_version is not None:
            params.append(("resourceVersion", resource_version))
        await self.client.request("DELETE", f"{self.path}/{name}", params=params)


class LeaseClient:
    """``/api/v1/leases`` (leader election): get, create, update, delete."""

    path = "/api/v1/leases"

    def __init__(self, client: CaravanseraiClient) -> None:
        self.client = client

    def _parse(self, data: Any) -> Lease:
        try:
            return Lease.model_validate(data)
        except ValidationError as exc:
            raise ProtocolError(f"the server sent an invalid Lease: {exc}") from exc

    async def get(self, name: str) -> Lease:
        """``GET /{name}``; NotFound on 404."""
        _, body = await self.client.request("GET", f"{self.path}/{name}")
        return self._parse(body)

    async def create(self, lease: Lease) -> Lease:
        """``POST``; AlreadyExists when another candidate created it first."""
        _, body = await self.client.request("POST", self.path, body=lease.to_wire())
        return self._parse(body)

    async def update(self, lease: Lease) -> Lease:
        """``PUT /{name}``; Conflict (409) when ``metadata.resourceVersion`` is stale."""
        name = lease.metadata.name
        _, body = await self.client.request("PUT", f"{self.path}/{name}", body=lease.to_wire())
        return self._parse(body)

    async def delete(self, name: str) -> None:
        """``DELETE /{name}``."""
        await self.client.request("DELETE", f"{self.path}/{name}")


async def _error_from_response(resp: aiohttp.ClientResponse) -> CaravanseraiError:
    raw = await resp.read()
    problem: Problem | None = None
    if "json" in (resp.content_type or ""):
        try:
            problem = Problem.model_validate_json(raw)
        except (ValidationError, ValueError):
            problem = None
    if problem is None:
        detail = raw.decode(errors="replace").strip()[:500]
        problem = Problem(title=resp.reason or "Error", status=resp.status, detail=detail)
    return error_from_problem(problem)


def _decode_line(line: bytes, url: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"watch {url}: invalid JSON line {line[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"watch {url}: event is not an object")
    return data


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # Its os_error's text ("operation not permitted") would hide the real cause.
        verify = getattr(exc.certificate_error, "verify_message", None)
        return (f"TLS certificate not trusted: {verify or exc.certificate_error}; "
                "give the server's CA with --certificate-authority")
    inner = getattr(exc, "os_error", None)
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    return str(exc) or type(exc).__name__
