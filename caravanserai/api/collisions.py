"""Names that must not collide between projects: Docker object names and ingress hosts.

Docker names are joined with ``-`` (container ``{project}-{service}``, volume
``cara-{project}-{volume}``, network ``cara-{project}``), so project ``a`` with service ``b-c``
and project ``a-b`` with service ``c`` both want container ``a-b-c``; the second must be
refused at admission, before an agent could stop or reuse the first's objects. Pure functions:
the server reads the few candidate projects and asks these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def docker_names(name: str, spec: dict[str, Any]) -> set[tuple[str, str]]:
    """``(kind, docker name)`` of every container, volume and network of a project (wire spec).

    Networks never collide (``cara-{project}`` is unique with the project name), but are
    listed so the set is the project's whole Docker footprint.
    """
    out = {("network", f"cara-{name}")}
    for service in spec.get("services") or []:
        out.add(("container", f"{name}-{service.get('name')}"))
    for volume in spec.get("volumes") or []:
        out.add(("volume", f"cara-{name}-{volume.get('name')}"))
    return out


def _dash_prefixes(value: str) -> Iterable[str]:
    """``"x-y-z"`` → ``"x"``, ``"x-y"`` (the prefixes that end just before a ``-``)."""
    return (value[:i] for i, ch in enumerate(value) if ch == "-")


def candidate_projects(name: str, spec: dict[str, Any]) -> set[str]:
    """Every other project name whose Docker names could equal this project's.

    If project ``q`` shares a name ``q-t == p-s``, then either ``q`` is ``p`` cut at one of
    its dashes, or ``q`` is ``p-`` plus a dash-prefix of one of ``p``'s service or volume
    names: a finite set, read by name rather than by scanning every project.
    """
    out = set(_dash_prefixes(name))
    parts = [s.get("name") for s in spec.get("services") or []]
    parts += [v.get("name") for v in spec.get("volumes") or []]
    for part in parts:
        if isinstance(part, str):
            out.update(f"{name}-{prefix}" for prefix in _dash_prefixes(part))
    out.discard(name)
    return out


def canonical_host(host: str) -> str:
    """An ingress host as it is compared: lower case, no trailing dot (DNS is
    case-insensitive). A host without a dot is completed on the agent as
    ``{host}.{environment}.{baseDomain}``; the server does not know each node's environment,
    so short hosts are compared with short hosts and full ones with full ones."""
    return host.strip().rstrip(".").lower()


def ingress_hosts(spec: dict[str, Any]) -> set[str]:
    return {
        canonical_host(rule["host"])
        for rule in spec.get("ingress") or []
        if isinstance(rule.get("host"), str)
    }
