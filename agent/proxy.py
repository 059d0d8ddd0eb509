"""The ingress proxy: HTTP by Host header to the services of this node's Running projects.

Routes come from ``spec.ingress``; hosts without a dot become
``{host}.{environment}.{baseDomain}``. A route points at a service, not an address: the
reconciler keeps the service's container IP current (containers that restart get new IPs),
and a refused connection re-resolves the IP once before answering 502. Routes exist only
while their project is Running and are removed with it.

Bodies are streamed both ways, never held whole: a request body past ``max_body_bytes`` is
a 413 (at once when its Content-Length says so, else when the limit is crossed, the upstream
request being aborted). Client-sent ``X-Forwarded-*`` headers are replaced by what the proxy
saw unless ``trust_forwarded`` (set it only behind a front proxy that writes them).
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from agent import naming
from caravanserai.api import Project

log = structlog.get_logger("agent.proxy")

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
        "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection",
    )
)

# (project, service) → current IP of its container on the project network, or None
Resolver = Callable[[str, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Route:
    host: str
    project: str
    service: str
    port: int
    ingress: str


def routes_for(project: Project, environment: str, base_domain: str) -> list[Route]:
    """The routes ``project``'s ingress rules ask for (pure)."""
    name = project.metadata.name
    return [
        Route(
            host=naming.resolve_host(rule.host, environment, base_domain),
            project=name,
            service=rule.target.service,
            port=rule.target.port,
            ingress=rule.name,
        )
        for rule in project.spec.ingress
    ]


class RouteTable:
    """host → route, and (project, service) → container IP. Event-loop only, no locks.

    A host claimed by two projects stays with the first one (the other is logged), and
    removing a project only ever removes its own hosts.
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._by_project: dict[str, set[str]] = {}
        self._ips: dict[tuple[str, str], str] = {}
        # (project, service) → why it must not get traffic (health: starting, exited, ...)
        self._unready: dict[tuple[str, str], str] = {}

    def set_project(
        self,
        project: str,
        routes: Iterable[Route],
        ips: dict[str, str],
        unready: dict[str, str] | None = None,
    ) -> None:
        """Replace ``project``'s routes, its services' IPs and which are not ready."""
        self.remove_project(project)
        for service, why in (unready or {}).items():
            self._unready[(project, service)] = why
        hosts: set[str] = set()
        for route in routes:
            owner = self._routes.get(route.host)
            if owner is not None and owner.project != project:
                log.warning("ingress host already routed to another project; ignored",
                            host=route.host, project=project, owner=owner.project)
                continue
            self._routes[route.host] = route
            hosts.add(route.host)
        self._by_project[project] = hosts
        for service, ip in ips.items():
            self._ips[(project, service)] = ip

    def remove_project(self, project: str) -> None:
        for host in self._by_project.pop(project, set()):
            if (route := self._routes.get(host)) is not None and route.project == project:
                del self._routes[host]
        for key in [k for k in self._ips if k[0] == project]:
            del self._ips[key]
        for key in [k for k in self._unready if k[0] == project]:
            del self._unready[key]

    def not_ready(self, project: str, service: str) -> str | None:
        """Why the service must not receive traffic now, or None when it may."""
        return self._unready.get((project, service))

    def lookup(self, host: str) -> Route | None:
        return self._routes.get(naming.host_from_header(host))

    def ip(self, project: str, service: str) -> str | None:
        return self._ips.get((project, service))

    def set_ip(self, project: str, service: str, ip: str | None) -> None:
        if ip:
            self._ips[(project, service)] = ip
        else:
            self._ips.pop((project, service), None)

    def hosts(self) -> dict[str, Route]:
        return dict(self._routes)


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "text/html" in accept


def bad_gateway(request: web.Request, detail: str) -> web.Response:
    """502 as problem+json, or a small HTML page for browsers."""
    return _proxy_problem(request, 502, "Bad Gateway", "bad-gateway", detail)


def unavailable(request: web.Request, detail: str) -> web.Response:
    """503: the backend exists but is not ready (its healthcheck has not passed)."""
    return _proxy_problem(request, 503, "Service Unavailable", "service-unavailable", detail)


def _proxy_problem(
    request: web.Request, status: int, title: str, slug: str, detail: str
) -> web.Response:
    if _wants_html(request):
        body = (
            f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{status} {title}"
            f"</title></head><body><h1>{status} {title}</h1>"
            f"<p>{html.escape(detail)}</p><hr><p>Caravanserai ingress proxy</p></body></html>"
        )
        return web.Response(status=status, text=body, content_type="text/html", charset="utf-8")
    problem = {
        "type": f"https://caravanserai.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    return web.Response(
        status=status, text=json.dumps(problem), content_type="application/problem+json"
    )


def forwarded_headers(request: web.Request, *, trust: bool = False) -> dict[str, str]:
    """The request headers to send upstream: hop-by-hop dropped, X-Forwarded-* set.

    Unless ``trust``, what the client claims (``X-Forwarded-*``, ``Forwarded``) is dropped:
    the backend sees the proxy's own view of the peer, host and scheme.
    """
    connection_tokens = {
        t.strip().lower() for t in request.headers.get("Connection", "").split(",") if t.strip()
    }
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in connection_tokens or lower.startswith("x-forwarded-"):
            continue
        if lower == "forwarded" and not trust:
            continue
        headers[key] = value
    peer = request.remote or ""
    previous = request.headers.get("X-Forwarded-For") if trust else None
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    if trust:
        headers["X-Forwarded-Host"] = request.headers.get("X-Forwarded-Host", request.host)
        headers["X-Forwarded-Proto"] = request.headers.get("X-Forwarded-Proto", request.scheme)
    else:
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Proto"] = request.scheme
    return headers


class _BodyTooLarge(Exception):
    pass


class _StreamedBody:
    """The request body as an async iterator for the upstream request, counting bytes.

    ``started`` tells whether any byte may have gone upstream (then a failed attempt cannot
    be retried); ``too_large`` that the limit was crossed (the upload is aborted).
    """

    def __init__(self, request: web.Request, limit: int) -> None:
        self._request = request
        self._limit = limit
        self.started = False
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        total = 0
        async for chunk in self._request.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > self._limit:
                self.too_large = True
                raise _BodyTooLarge
            yield chunk


def payload_too_large(limit: int) -> web.Response:
    problem = {
        "type": "https://caravanserai.dev/problems/payload-too-large",
        "title": "Payload Too Large",
        "status": 413,
        "detail": f"request body exceeds the proxy's limit of {limit} bytes",
    }
    return web.Response(
        status=413, text=json.dumps(problem), content_type="application/problem+json",
        headers={"Connection": "close"},
    )


class IngressProxy:
    """The proxy's aiohttp application and upstream session."""

    def __init__(
        self,
        table: RouteTable,
        resolver: Resolver,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_body_bytes: int = 1024 * 1024 * 1024,
        trust_forwarded: bool = False,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self.trust_forwarded = trust_forwarded
        self.table = table
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=0)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    async def _start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def _stop(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _upstream(
        self, request: web.Request, ip: str, port: int, body: _StreamedBody | None
    ) -> aiohttp.ClientResponse:
        assert self._session is not None
        url = f"http://{ip}:{port}{request.rel_url}"
        return await self._session.request(
            request.method,
            url,
            headers=forwarded_headers(request, trust=self.trust_forwarded),
            data=body.chunks() if body is not None else None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            ),
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        route = self.table.lookup(request.host)
        host = naming.host_from_header(request.host)
        if route is None:
            return bad_gateway(request, f'Host "{host}" has no backend on this node.')
        why = self.table.not_ready(route.project, route.service)
        if why is not None:
            return unavailable(
                request,
                f'Service "{route.service}" of project "{route.project}" is not ready ({why}).',
            )
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return payload_too_large(self.max_body_bytes)
        # Streamed: a connection refused by a stale IP is retried only if no byte was sent.
        body = _StreamedBody(request, self.max_body_bytes) if request.body_exists else None
        ip = self.table.ip(route.project, route.service)
        upstream: aiohttp.ClientResponse | None = None
        for attempt in range(2):
            if ip is None or attempt == 1:
                fresh = await self.resolver(route.project, route.service)
                if fresh is None or (attempt == 1 and fresh == ip):
                    break
                ip = fresh
                self.table.set_ip(route.project, route.service, ip)
            try:
                upstream = await self._upstream(request, ip, route.port, body)
                break
            except (aiohttp.ClientConnectorError, TimeoutError) as exc:
                log.info("backend unreachable", host=host, project=route.project,
                         service=route.service, ip=ip, error=str(exc))
                if body is not None and body.started:
                    break
                continue
            except aiohttp.ClientError as exc:
                log.info("backend error", host=host, project=route.project,
                         service=route.service, error=str(exc))
                break
        if body is not None and body.too_large:
            if upstream is not None:
                upstream.close()
            return payload_too_large(self.max_body_bytes)
        if upstream is None:
            target = f"{route.service}:{route.port}"
            return bad_gateway(
                request, f'Backend "{target}" of project "{route.project}" is unreachable.'
            )
        try:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() in HOP_BY_HOP or key.lower() == "content-length":
                    continue
                response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        except (aiohttp.ClientError, ConnectionResetError, asyncio.IncompleteReadError) as exc:
            log.info("proxy stream broken", host=host, error=str(exc))
            raise
        finally:
            upstream.release()
