"""``describe``: a readable, aligned report of one object, in kubectl's layout.

Top-level ``Key:`` lines align their values on one column; nested lists are indented by two
spaces; conditions and the phase history are small tables. Every field of the models is
shown somewhere (a unit test walks the models and checks it), so a field added to the API
is not silently missing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from caravanserai.api import Condition, Node, Project
from caravanserai.api.ingress import DEFAULT_BASE_DOMAIN, DEFAULT_ENVIRONMENT, resolve_host
from caravanserai.api.ingress import ingress_domain as make_domain
from caravanserai.api.project import ProjectPhase, ServiceDef
from caravanserai.api.quantities import format_cpus, format_memory
from caravanserai.api.requests import ZERO, node_allocatable, project_request
from cli.formatting import (
    NONE,
    UNKNOWN,
    Table,
    age,
    key_values,
    or_placeholder,
    timestamp_with_age,
)
from cli.tables import conditions_summary

INDENT = "  "
# A message in the middle column of the phase history would pad every row to its length (an
# image-pull error is ~200 characters): clip it there; the Conditions table, where it is
# the last column, and ``-o yaml`` show it whole.
HISTORY_MESSAGE_WIDTH = 60


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def default_ingress_domain() -> str:
    return make_domain(DEFAULT_ENVIRONMENT, DEFAULT_BASE_DOMAIN)


@dataclass
class _Block:
    """Lines of one indentation level whose ``Key:`` values are aligned together."""

    indent: int
    pairs: list[tuple[str, str | None]] = field(default_factory=list)


class Report:
    """Builds describe output; ``add`` key/value lines, ``raw`` pre-formatted lines."""

    def __init__(self) -> None:
        self._items: list[_Block | tuple[int, str]] = []

    def add(self, key: str, value: object | None = None, *, indent: int = 0) -> None:
        """``Key:  value``; ``value`` None makes a section heading (``Key:`` alone)."""
        last = self._items[-1] if self._items else None
        if not isinstance(last, _Block) or last.indent != indent:
            last = _Block(indent)
            self._items.append(last)
        last.pairs.append((key, None if value is None else str(value)))

    def raw(self, line: str, *, indent: int = 0) -> None:
        self._items.append((indent, line))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], *, indent: int) -> None:
        if not rows:
            self.raw(NONE, indent=indent)
            return
        for line in Table(headers).render(rows):
            self.raw(line, indent=indent)

    def lines(self) -> list[str]:
        out: list[str] = []
        # One value column per indentation level across the whole report, as kubectl's
        # tabwriter does for a contiguous section: the eye scans one straight column.
        widths: dict[int, int] = {}
        for item in self._items:
            if isinstance(item, _Block):
                for key, value in item.pairs:
                    if value is not None:
                        widths[item.indent] = max(widths.get(item.indent, 0), len(key) + 1)
        for item in self._items:
            if isinstance(item, _Block):
                pad = INDENT * item.indent
                for key, value in item.pairs:
                    if value is None:
                        out.append(f"{pad}{key}:")
                    else:
                        out.append(f"{pad}{(key + ':').ljust(widths[item.indent])}  {value}")
            else:
                indent, line = item
                out.append(f"{INDENT * indent}{line}".rstrip())
        return out

    def text(self) -> str:
        return "\n".join(self.lines())


def _metadata(r: Report, obj: Project | Node, now: datetime) -> None:
    m = obj.metadata
    r.add("Name", m.name)
    r.add("Kind", obj.kind)
    r.add("Labels", key_values(m.labels))
    r.add("Annotations", key_values(m.annotations))
    r.add("UID", or_placeholder(m.uid))
    r.add("Resource Version", or_placeholder(m.resource_version))
    r.add("Generation", or_placeholder(m.generation))
    r.add("Created", timestamp_with_age(m.creation_timestamp, now))
    if m.deletion_timestamp is not None:
        r.add("Deleting Since", timestamp_with_age(m.deletion_timestamp, now))


def _conditions(r: Report, conditions: Sequence[Condition], now: datetime) -> None:
    r.add("Conditions")
    rows = [
        [
            c.type,
            c.status.value,
            or_placeholder(c.reason, "-"),
            age(c.last_transition_time, now) if c.last_transition_time else "-",
            age(c.last_heartbeat_time, now) if c.last_heartbeat_time else "-",
            or_placeholder(c.message, "-"),
        ]
        for c in conditions
    ]
    r.table(
        ["Type", "Status", "Reason", "Last Transition", "Last Heartbeat", "Message"],
        rows,
        indent=1,
    )


def _service(r: Report, svc: ServiceDef, state: str | None) -> None:
    r.add(svc.name, indent=1)
    r.add("Image", svc.image, indent=2)
    if svc.entrypoint is not None:
        r.add("Entrypoint", " ".join(svc.entrypoint) or '""', indent=2)
    if svc.command is not None:
        r.add("Command", " ".join(svc.command) or '""', indent=2)
    ports = [
        (f"{p.host_port}:" if p.host_port else "") + f"{p.container_port}/{p.protocol.value}"
        for p in svc.ports
    ]
    r.add("Ports", ", ".join(ports) or NONE, indent=2)
    r.add("State", state or UNKNOWN, indent=2)
    if svc.restart is not None:
        r.add("Restart", svc.restart.value, indent=2)
    if svc.depends_on:
        r.add("Depends On", ", ".join(
            f"{d.service} ({d.condition.value})" for d in svc.depends_on), indent=2)
    if svc.healthcheck is not None:
        hc = svc.healthcheck
        timing = [f"{k}={v}" for k, v in (("interval", hc.interval), ("timeout", hc.timeout),
                                           ("retries", hc.retries),
                                           ("start-period", hc.start_period)) if v is not None]
        r.add("Healthcheck", " ".join(hc.test) + (f" [{' '.join(timing)}]" if timing else ""),
              indent=2)
    if svc.resources is not None:
        for title, block in (("Limits", svc.resources.limits),
                             ("Requests", svc.resources.requests)):
            if block is not None:
                r.add(title, key_values({k: str(v) for k, v in block.model_dump(
                    exclude_none=True).items()}), indent=2)
    r.add("Env", None if svc.env else NONE, indent=2)
    for e in svc.env:
        r.raw(f"{e.name}={e.value}", indent=3)
    r.add("Volume Mounts", None if svc.volume_mounts else NONE, indent=2)
    for vm in svc.volume_mounts:
        r.raw(f"{vm.name} -> {vm.mount_path}", indent=3)


def describe_project(
    project: Project, now: datetime | None = None, ingress_domain: str | None = None
) -> str:
    """``ingress_domain``: what the project's node completes short ingress hosts with (its
    ``status.network.ingressDomain``); the agents' default when unknown."""
    now = now or datetime.now(UTC)
    domain = ingress_domain or default_ingress_domain()
    r = Report()
    _metadata(r, project, now)
    spec, status = project.spec, project.status
    r.add("Expire At", timestamp_with_age(spec.expire_at, now) if spec.expire_at else NONE)
    r.add("Phase", or_placeholder(status.phase and status.phase.value, UNKNOWN))
    r.add("Node", or_placeholder(status.node_ref))
    r.add("Conditions Summary", conditions_summary(status.conditions))
    r.add("Observed Generation", or_placeholder(status.observed_generation))

    observed = {s.name: s for s in status.services}
    r.add("Services")
    for svc in spec.services:
        st = observed.get(svc.name)
        state = None
        if st is not None:
            parts = [st.state or UNKNOWN]
            if st.exit_code is not None:
                parts.append(f"exit code {st.exit_code}")
            if st.container_id:
                parts.append(f"container {st.container_id[:12]}")
            if st.health:
                parts.append(f"health {st.health}")
            if st.ready is not None:
                parts.append("ready" if st.ready else "not ready")
            if st.restart_count:
                parts.append(f"restarts {st.restart_count}")
            state = ", ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if parts[1:] else "")
            if st.message:
                state += f": {st.message}"
        _service(r, svc, state)

    r.add("Volumes")
    r.table(["Name", "Type"], [[v.name, v.type.value] for v in spec.volumes], indent=1)
    r.add("Ingress")
    r.table(
        ["Name", "Host", "Target", "Scope"],
        [
            # The host that routes (``news.dev.cara.local``), not the short form written.
            [i.name, resolve_host(i.host, domain), f"{i.target.service}:{i.target.port}",
             i.access.scope.value]
            for i in spec.ingress
        ],
        indent=1,
    )
    _conditions(r, status.conditions, now)
    r.add("Phase History")
    # Newest first: the reader is looking for what just happened.
    r.table(
        ["Phase", "Reason", "Message", "Age"],
        [
            [h.phase.value, or_placeholder(h.reason, "-"),
             clip(or_placeholder(h.message, "-"), HISTORY_MESSAGE_WIDTH), age(h.time, now)]
            for h in reversed(status.history)
        ],
        indent=1,
    )
    return r.text()


def _allocated(r: Report, node: Node, projects: Sequence[Project]) -> None:
    """kubectl's "Allocated resources": the requests of the projects on the node against
    what it offers."""
    total = ZERO
    for p in projects:
        if p.status.phase not in (ProjectPhase.PENDING, ProjectPhase.TERMINATED, None):
            total += project_request(p)
    offer = node_allocatable(node)

    def share(used: float, of: float | None) -> str:
        return f" ({used / of:.0%})" if of else ""

    r.add("Allocated Resources")
    r.table(
        ["Resource", "Requests", "Allocatable"],
        [
            ["cpu", format_cpus(total.cpus) + share(total.cpus, offer.cpus),
             format_cpus(offer.cpus) if offer.cpus is not None else "unlimited"],
            ["memory", format_memory(total.memory) + share(total.memory, offer.memory),
             format_memory(offer.memory) if offer.memory is not None else "unlimited"],
        ],
        indent=1,
    )


def describe_node(
    node: Node,
    now: datetime | None = None,
    projects: Sequence[Project] = (),
    last_heartbeat: datetime | None = None,
) -> str:
    """``last_heartbeat``: what ``GET /api/v1/nodes/{name}/heartbeat`` answered (already the
    newer of the lease and ``status.lastHeartbeat``); without it, the status's."""
    now = now or datetime.now(UTC)
    r = Report()
    _metadata(r, node, now)
    spec, status = node.spec, node.status
    r.add("Hostname", or_placeholder(spec.hostname))
    r.add("Unschedulable", "true" if spec.unschedulable else "false")
    r.add("State", status.state.value if status.state else UNKNOWN)
    r.add("Last Heartbeat", timestamp_with_age(last_heartbeat or status.last_heartbeat, now))

    net = status.network
    r.add("Network")
    r.add("IP", or_placeholder(net.ip), indent=1)
    r.add("DNS Name", or_placeholder(net.dns_name), indent=1)
    r.add("Mode", or_placeholder(net.mode and net.mode.value), indent=1)
    r.add("Agent Port", or_placeholder(net.agent_port), indent=1)
    r.add("Proxy Port", or_placeholder(net.proxy_port), indent=1)
    r.add("Ingress Domain", or_placeholder(net.ingress_domain), indent=1)
    tp = net.throughput
    if tp is not None:
        r.add("Throughput", indent=1)
        r.add("Download", or_placeholder(tp.download), indent=2)
        r.add("Upload", or_placeholder(tp.upload), indent=2)
        r.add("Last Test", timestamp_with_age(tp.last_test_time, now), indent=2)

    info = status.info
    r.add("System Info")
    r.add("Hostname", or_placeholder(info.hostname, UNKNOWN), indent=1)
    r.add("OS Image", or_placeholder(info.os_image, UNKNOWN), indent=1)
    r.add("Kernel Version", or_placeholder(info.kernel_version, UNKNOWN), indent=1)
    r.add("Architecture", or_placeholder(info.architecture, UNKNOWN), indent=1)
    r.add("Docker Version", or_placeholder(info.docker_version, UNKNOWN), indent=1)
    r.add("Agent Version", or_placeholder(info.agent_version, UNKNOWN), indent=1)

    for title, resources in (("Capacity", status.capacity), ("Allocatable", status.allocatable)):
        r.add(title, None if resources else NONE)
        for k, v in sorted(resources.items()):
            r.add(k, v, indent=1)

    _allocated(r, node, projects)
    _conditions(r, status.conditions, now)
    r.add("Projects", None if projects else NONE)
    if projects:
        r.table(
            ["Name", "Phase", "Age"],
            [
                [p.metadata.name, or_placeholder(p.status.phase and p.status.phase.value, UNKNOWN),
                 age(p.metadata.creation_timestamp, now)]
                for p in projects
            ],
            indent=1,
        )
    return r.text()
