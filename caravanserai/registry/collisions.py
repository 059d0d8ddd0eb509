"""Admission checks across projects: Docker names and ingress hosts must be unique.

Run on create and on a spec update (``routes_resources``). A 409 names the project that holds
the name, so the user knows whom to talk to. Checked before the write, not inside its
transaction: two racing creates can both pass, which the agent catches (it never touches an
object whose owner label is another project's: the loser is Failed with ``NameConflict``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from caravanserai.api.collisions import candidate_projects, docker_names, ingress_hosts
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.api.resources import PROJECTS
from caravanserai.store.types import Obj, Store


async def _get(store: Store, name: str) -> Obj | None:
    try:
        return await store.get(PROJECTS.kind, name)
    except NotFound:
        return None


async def check_project_names(store: Store, name: str, spec: dict[str, Any]) -> None:
    """Conflict (409) when another project's containers or volumes have this one's names."""
    ours = {n for n in docker_names(name, spec) if n[0] != "network"}
    candidates = sorted(candidate_projects(name, spec))
    others = await asyncio.gather(*(_get(store, c) for c in candidates))
    for other in others:
        if other is None:
            continue
        other_name = other["metadata"]["name"]
        shared = ours & docker_names(other_name, other.get("spec") or {})
        if shared:
            kind, docker_name = sorted(shared)[0]
            raise Conflict(
                f'{kind} name "{docker_name}" of project "{name}" is already used by '
                f'project "{other_name}"; rename a service, volume or the project'
            )


async def check_ingress_hosts(store: Store, name: str, spec: dict[str, Any]) -> None:
    """Conflict (409) when another project (not being deleted) serves one of these hosts."""
    hosts = ingress_hosts(spec)
    if not hosts:
        return
    # One full list: fine at hundreds of projects (a host index in the store would scale).
    result = await store.list(PROJECTS.kind)
    for other in result.items:
        meta = other.get("metadata") or {}
        if meta.get("name") == name or meta.get("deletionTimestamp"):
            continue
        shared = hosts & ingress_hosts(other.get("spec") or {})
        if shared:
            raise Conflict(
                f'ingress host "{sorted(shared)[0]}" is already served by project '
                f'"{meta.get("name")}"'
            )


async def check_project(store: Store, name: str, spec: dict[str, Any]) -> None:
    await check_project_names(store, name, spec)
    await check_ingress_hosts(store, name, spec)
