"""Nodes: the whole write policy of the Node kind.

* create: a fresh NotReady status with a Ready=False condition until the first heartbeat;
* update: spec, labels, annotations; update_status keeps the Ready condition agreeing
  with the state; heartbeat merges the agent's report (an admin's Draining is kept);
* heartbeat: a heartbeat that would change nothing but ``lastHeartbeat`` of a Ready node
  only renews the node's lease (:mod:`caravanserai.store.node_leases`) — one statement, no
  revision, no watch event — unless ``lastHeartbeat`` is older than
  :data:`~caravanserai.registry.lifecycle.NODE_STATUS_REFRESH`; :meth:`last_heartbeat` is
  the newer of the two;
* delete: refused (409) while projects occupy the node
  (:data:`~caravanserai.api.phases.OCCUPYING_PHASES`, the set the scheduler counts as
  load), unless forced.
"""

from __future__ import annotations

from datetime import datetime

from caravanserai.api.base import ObjectMeta, utcnow
from caravanserai.api.node import Heartbeat, Node, NodeStatus
from caravanserai.api.phases import OCCUPYING_PHASES
from caravanserai.api.problems import Conflict, Forbidden, Invalid, NotFound
from caravanserai.api.selectors import Selector
from caravanserai.api.validation import validate_node
from caravanserai.logging import get_logger
from caravanserai.registry import lifecycle
from caravanserai.registry.base import KindRegistry, RevisionObserver
from caravanserai.store.node_leases import NodeLeases
from caravanserai.store.types import Obj, Store

log = get_logger("caravanserai.registry.nodes")


class NodeRegistry(KindRegistry[Node]):
    model = Node
    kind = "Node"
    noun = "node"

    def __init__(
        self,
        store: Store,
        on_write: RevisionObserver | None = None,
        leases: NodeLeases | None = None,
    ) -> None:
        super().__init__(store, on_write)
        # None (a store without the lease table): every heartbeat rewrites the Node.
        self.leases = leases

    def new_object(self, node: Node) -> Obj:
        """The stored form of a create (server-managed metadata and a fresh status)."""
        meta = ObjectMeta(
            name=node.metadata.name,
            labels=dict(node.metadata.labels),
            annotations=dict(node.metadata.annotations),
        )
        status = lifecycle.initial_node_status(utcnow())
        return self.encode(node.model_copy(update={"metadata": meta, "status": status}))

    async def create(self, node: Node) -> Node:
        """Register a node (NotReady until it heartbeats)."""
        _validate(node)
        created = await self._create(self.new_object(node))
        log.info("node.created", kind="Node", name=created.metadata.name,
                 revision=created.metadata.resource_version)
        return created

    async def update(self, node: Node, *, as_node: str | None = None) -> Node:
        """Replace spec, labels and annotations (resourceVersion precondition when set).

        ``as_node``: the write comes from that node's own credential, which may not change
        ``spec.unschedulable`` (cordon/drain are an admin's; checked in the transaction)."""
        _validate(node)
        if as_node is None:
            return await self._replace_spec_and_metadata(node)

        def keep_unschedulable(current: Obj, spec: Obj) -> None:
            was = bool((current.get("spec") or {}).get("unschedulable", False))
            if bool(spec.get("unschedulable", False)) != was:
                raise Forbidden(
                    f'node "{as_node}" may not change its spec.unschedulable: cordon and '
                    "drain are an admin's decision"
                )

        return await self._replace_spec_and_metadata(node, keep_unschedulable)

    async def update_status(self, node: Node) -> Node:
        """Replace the status; the Ready condition is made to agree with the state."""
        sent = node.status
        now = utcnow()

        def mutate(current: Obj) -> Obj | None:
            old_wire = current.get("status") or {}
            new_status = sent.model_copy(deep=True)
            lifecycle.sync_ready_condition(new_status, now)
            new_wire = new_status.to_wire()
            if new_wire == old_wire:
                return None
            current["status"] = new_wire
            return current

        stored = await self._update(node.metadata.name, mutate, node.metadata.resource_version)
        return self.decode(stored)

    async def heartbeat(self, name: str, heartbeat: Heartbeat | None = None) -> None:
        """Merge an agent's heartbeat; NotFound tells the agent to register again.

        The agents' hottest write, and usually news of nothing: then only the node's lease
        is renewed (one statement); the Node itself is rewritten — a revision and an event
        for every Node watcher — when the heartbeat changes its status, when the node is not
        Ready (node-health brings a silent node back on seeing it), or when its
        ``lastHeartbeat`` is older than ``NODE_STATUS_REFRESH``. Nothing is returned (no
        caller needs the node back)."""
        hb = heartbeat or Heartbeat()
        now = utcnow()
        if self.leases is not None:
            try:
                stored = await self.leases.renew(name, now)
            except NotFound:
                raise self.not_found(name) from None
            if lifecycle.heartbeat_is_routine(NodeStatus.model_validate(stored), hb, now):
                return

        def mutate(current: Obj) -> Obj:
            status = NodeStatus.model_validate(current.get("status") or {})
            lifecycle.apply_heartbeat(status, hb, now)
            current["status"] = status.to_wire()
            return current

        await self._update(name, mutate)

    async def last_heartbeat(self, name: str) -> datetime | None:
        """When node ``name``'s agent last heartbeated: the newer of its lease and its
        ``status.lastHeartbeat`` (None: never). NotFound when there is no such node."""
        node = self.decode(await self.get_stored(name))
        renewed = await self.leases.renewed_at(name) if self.leases is not None else None
        beats = [t for t in (node.status.last_heartbeat, renewed) if t is not None]
        return max(beats) if beats else None

    async def occupants(self, name: str) -> list[str]:
        """Names of the projects that occupy node ``name`` (sorted)."""
        assigned = await self.store.list(
            "Project", Selector.parse(any_of={"status.nodeRef": {name}})
        )
        return sorted(
            p["metadata"]["name"]
            for p in assigned.items
            if (p.get("status") or {}).get("phase") in OCCUPYING_PHASES
        )

    async def delete(self, name: str, *, force: bool = False) -> None:
        """Remove the node; Conflict (409) while projects occupy it, unless ``force``.

        The occupancy check and the delete are two steps (they concern different objects);
        a project scheduled onto the node in between is moved off by the rescheduler, which
        treats a missing node like a NotReady one.
        """
        await self.get_stored(name)
        if not force:
            busy = await self.occupants(name)
            if busy:
                shown = ", ".join(busy[:10]) + (", ..." if len(busy) > 10 else "")
                raise Conflict(
                    f'cannot delete node "{name}": {len(busy)} project(s) still assigned '
                    f"({shown}); delete them first or use ?force=true"
                )
        try:
            old = await self.store.delete(self.kind, name)
        except NotFound:
            raise self.not_found(name) from None
        self.observed(old)
        if self.leases is not None:
            await self.leases.forget(name)
        log.info("node.deleted", kind="Node", name=name, force=force)


def _validate(node: Node) -> None:
    errors = validate_node(node)
    if errors:
        raise Invalid(f'Node "{node.metadata.name}" is invalid', errors)
