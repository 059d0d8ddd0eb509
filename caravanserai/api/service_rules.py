"""Rules for the Compose-like parts of a service: restart, healthcheck, dependsOn, resources.

Run on the raw (JSON data model) spec like the rest of pass 2 of ``validation``; values of the
wrong type are left to pass 1. Returns ``(field, message)`` pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from caravanserai.api.quantities import parse_cpus, parse_duration, parse_memory

_HEALTH_TEST_KINDS = ("CMD", "CMD-SHELL", "NONE")
# Bounds no real machine reaches, so that Docker's int64 fields (nanoseconds, NanoCpus,
# bytes) never overflow on the agent.
MAX_CPUS = 4096
MAX_MEMORY = 1 << 50  # 1 PiB
MAX_PIDS = (1 << 31) - 1
MIN_MEMORY_LIMIT = 6 * 1024 * 1024  # Docker refuses a smaller memory limit
MAX_HEALTH_DURATION = 24 * 3600


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_service_extras(service: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    """Healthcheck and resources of one service."""
    errs: list[tuple[str, str]] = []
    health = service.get("healthcheck")
    if isinstance(health, Mapping):
        test = health.get("test")
        if isinstance(test, list):
            if not test:
                errs.append((f"{path}.healthcheck.test", "must not be empty"))
            elif test[0] not in _HEALTH_TEST_KINDS:
                errs.append((f"{path}.healthcheck.test[0]",
                             'must be "CMD", "CMD-SHELL" or "NONE"'))
            elif test[0] != "NONE" and len(test) < 2:
                errs.append((f"{path}.healthcheck.test", f'"{test[0]}" needs a command'))
        for key in ("interval", "timeout", "startPeriod"):
            value = health.get(key)
            if isinstance(value, str):
                try:
                    seconds = parse_duration(value)
                except ValueError as exc:
                    errs.append((f"{path}.healthcheck.{key}", str(exc)))
                    continue
                if key != "startPeriod" and seconds < 0.001:
                    errs.append((f"{path}.healthcheck.{key}", "must be at least 1ms"))
                elif seconds > MAX_HEALTH_DURATION:
                    errs.append((f"{path}.healthcheck.{key}", "must be at most 24h"))
        retries = health.get("retries")
        if isinstance(retries, int) and not isinstance(retries, bool) and not (
            0 <= retries <= MAX_PIDS
        ):
            errs.append((f"{path}.healthcheck.retries", f"must be between 0 and {MAX_PIDS}"))

    resources = service.get("resources")
    if isinstance(resources, Mapping):
        for part in ("limits", "requests"):
            block = resources.get(part)
            if not isinstance(block, Mapping):
                continue
            where = f"{path}.resources.{part}"
            cpus = block.get("cpus")
            if isinstance(cpus, str) or _number(cpus):
                try:
                    value = parse_cpus(cpus)
                    if value <= 0 and part == "limits":
                        errs.append((f"{where}.cpus", "must be greater than 0"))
                    elif value > MAX_CPUS:
                        errs.append((f"{where}.cpus", f"must be at most {MAX_CPUS}"))
                except ValueError as exc:
                    errs.append((f"{where}.cpus", str(exc)))
            memory = block.get("memory")
            if isinstance(memory, (str, int)) and not isinstance(memory, bool):
                try:
                    size = parse_memory(memory)
                    # Docker refuses less than 6 MiB for a memory limit.
                    if part == "limits" and size < MIN_MEMORY_LIMIT:
                        errs.append((f"{where}.memory", "must be at least 6Mi (Docker's minimum)"))
                    elif size > MAX_MEMORY:
                        errs.append((f"{where}.memory", "must be at most 1Pi"))
                except ValueError as exc:
                    errs.append((f"{where}.memory", str(exc)))
            pids = block.get("pids")
            if isinstance(pids, int) and not isinstance(pids, bool) and not 1 <= pids <= MAX_PIDS:
                errs.append((f"{where}.pids", f"must be between 1 and {MAX_PIDS}"))
        limits, requests = resources.get("limits"), resources.get("requests")
        if isinstance(limits, Mapping) and isinstance(requests, Mapping):
            for key, parse in (("cpus", parse_cpus), ("memory", parse_memory)):
                try:
                    if (
                        key in limits and key in requests
                        and parse(requests[key]) > parse(limits[key])
                    ):
                        errs.append((f"{path}.resources.requests.{key}",
                                     f"must not exceed resources.limits.{key}"))
                except ValueError:
                    pass  # reported above
    return errs


def check_dependencies(services: Any) -> list[tuple[str, str]]:
    """``dependsOn``: known services, not itself, no cycles (the cycle is spelled out)."""
    if not isinstance(services, list):
        return []
    errs: list[tuple[str, str]] = []
    names = [s.get("name") for s in services if isinstance(s, Mapping)]
    known = {n for n in names if isinstance(n, str)}
    checked = {
        s.get("name") for s in services
        if isinstance(s, Mapping) and isinstance(s.get("healthcheck"), Mapping)
        and s["healthcheck"].get("test") != ["NONE"]
    }
    graph: dict[str, list[str]] = {}
    for i, service in enumerate(services):
        if not isinstance(service, Mapping):
            continue
        name = service.get("name")
        deps = service.get("dependsOn")
        if not isinstance(deps, list):
            continue
        seen: set[str] = set()
        for j, dep in enumerate(deps):
            if not isinstance(dep, Mapping) or not isinstance(dep.get("service"), str):
                continue
            target = dep["service"]
            field = f"spec.services[{i}].dependsOn[{j}].service"
            if target == name:
                errs.append((field, "a service cannot depend on itself"))
            elif target not in known:
                errs.append((field, f'service "{target}" is not declared in spec.services'))
            elif target in seen:
                errs.append((field, f'duplicate dependency on "{target}"'))
            else:
                seen.add(target)
                if dep.get("condition") == "service_healthy" and target not in checked:
                    # As docker compose: waiting for health needs something to report it.
                    errs.append((f"spec.services[{i}].dependsOn[{j}].condition",
                                 f'service "{target}" has no healthcheck'))
                if isinstance(name, str):
                    graph.setdefault(name, []).append(target)
    cycle = find_cycle(graph)
    if cycle:
        first = names.index(cycle[0])
        errs.append((f"spec.services[{first}].dependsOn",
                     "dependency cycle: " + " -> ".join([*cycle, cycle[0]])))
    return errs


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """One cycle of the dependency graph (in dependency order), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None
