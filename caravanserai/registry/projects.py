"""Projects: the whole write policy of the Project kind.

* create: client metadata (name, labels, annotations) and spec, a fresh Pending status
  (client status is ignored), semantic validation;
* update: spec, labels, annotations (a deleting project's spec is frozen; a spec change
  redeploys a Failed one), resourceVersion precondition;
* update_status / patch_phase: the phase machine (:mod:`caravanserai.api.phases`), history
  and conditions (:mod:`caravanserai.registry.lifecycle`);
* bind: many Pending → Scheduled placements in one transaction;
* delete: removed at once off-node or with force, else Terminating for the node's agent.

Every write that depends on the current state is a store ``update`` with a mutator, so the
rule check and the write are one atomic step (no read-modify-write races, REFERENCE §10.9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from caravanserai.api.base import ObjectMeta, utcnow
from caravanserai.api.binding import Binding, BindingOutcome, BindingResult
from caravanserai.api.phases import DELETING_PHASES
from caravanserai.api.problems import (
    CaravanseraiError,
    Conflict,
    FieldError,
    Forbidden,
    Invalid,
    NotFound,
)
from caravanserai.api.project import Project, ProjectPhase, ProjectStatus
from caravanserai.api.validation import is_dns_label, validate_project
from caravanserai.logging import get_logger
from caravanserai.registry import collisions, lifecycle
from caravanserai.registry.base import KindRegistry, revision_of, timestamp
from caravanserai.store.types import Mutator, Obj

log = get_logger("caravanserai.registry.projects")

REASON_SCHEDULED = "Scheduled"


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    """``project`` is None when the record is gone (HTTP 204), else it is now Terminating
    and will be removed once its node has torn it down (HTTP 202)."""

    project: Project | None


class _Retry(Conflict):
    """The project changed between our read and our write in a way that changes the plan."""


def _on_node(obj: Obj) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("nodeRef")) and status.get("phase") != ProjectPhase.TERMINATED


def _is_deleting(obj: Obj) -> bool:
    status = obj.get("status") or {}
    return bool((obj.get("metadata") or {}).get("deletionTimestamp")) or status.get(
        "phase"
    ) in DELETING_PHASES


class ProjectRegistry(KindRegistry[Project]):
    model = Project
    kind = "Project"
    noun = "project"

    def new_object(self, project: Project) -> Obj:
        """The stored form of a create (server-managed metadata and a fresh status)."""
        # uid, generation, creationTimestamp and resourceVersion are set by the store.
        meta = ObjectMeta(
            name=project.metadata.name,
            labels=dict(project.metadata.labels),
            annotations=dict(project.metadata.annotations),
        )
        status = lifecycle.initial_project_status(utcnow())
        return self.encode(project.model_copy(update={"metadata": meta, "status": status}))

    async def create(self, project: Project) -> Project:
        """Store a new Pending project; Invalid (422) for a bad one, AlreadyExists (409)."""
        _validate(project)
        obj = self.new_object(project)
        # Docker names and ingress hosts that another project already holds: 409 naming it.
        await collisions.check_project(self.store, project.metadata.name, obj["spec"])
        created = await self._create(obj)
        log.info("project.created", kind="Project", name=created.metadata.name,
                 revision=created.metadata.resource_version)
        return created

    async def update(self, project: Project) -> Project:
        """Replace spec, labels and annotations (resourceVersion precondition when set)."""
        _validate(project)
        name = project.metadata.name
        spec = project.spec.to_wire()
        await collisions.check_project(self.store, name, spec)
        labels = dict(project.metadata.labels)
        annotations = dict(project.metadata.annotations)
        now = utcnow()

        def mutate(current: Obj) -> Obj | None:
            meta = current.setdefault("metadata", {})
            spec_changed = current.get("spec") != spec
            if spec_changed and _is_deleting(current):
                # Labels and annotations may still change (e.g. a re-applied manifest).
                phase = (current.get("status") or {}).get("phase")
                raise Conflict(
                    f'project "{name}" is being deleted (phase {phase}): '
                    "its spec can no longer change"
                )
            if (
                not spec_changed
                and (meta.get("labels") or {}) == labels
                and (meta.get("annotations") or {}) == annotations
            ):
                return None  # nothing to write: no new revision, no event
            current["spec"] = spec
            meta["labels"] = labels
            meta["annotations"] = annotations
            # The store bumps metadata.generation when the spec changed.
            if spec_changed:
                status = ProjectStatus.model_validate(current.get("status") or {})
                if lifecycle.redeploy_after_spec_change(status, name, now):
                    current["status"] = status.to_wire()
            return current

        stored = await self._update(name, mutate, project.metadata.resource_version)
        return self.decode(stored)

    async def update_status(self, project: Project, *, as_node: str | None = None) -> Project:
        """Replace the status under the phase machine (history is server-kept).

        ``as_node``: the write comes from that node's credential; it must be bound to the
        project and stay so (checked here, in the write's transaction: no race with a
        rebind)."""
        name = project.metadata.name
        sent = project.status
        now = utcnow()

        def mutate(current: Obj) -> Obj | None:
            old_wire = current.get("status") or {}
            old = ProjectStatus.model_validate(old_wire)
            new_status = lifecycle.replace_status(old, sent, name, now)
            if as_node is not None:
                node_may_write(name, as_node, old_wire.get("nodeRef"), new_status.node_ref)
            new_wire = new_status.to_wire()
            if new_wire == old_wire:
                return None
            current["status"] = new_wire
            return current

        stored = await self._update(name, mutate, project.metadata.resource_version)
        return self.decode(stored)

    def _phase_mutator(
        self,
        name: str,
        phase: ProjectPhase,
        reason: str | None,
        message: str | None,
        node_ref: str | None,
        as_node: str | None = None,
    ) -> Mutator:
        if node_ref is not None and phase is not ProjectPhase.SCHEDULED:
            raise Invalid(
                "status patch is invalid",
                [FieldError(field="nodeRef", message="may only be set with phase Scheduled")],
            )
        now = utcnow()

        def mutate(current: Obj) -> Obj | None:
            status = ProjectStatus.model_validate(current.get("status") or {})
            if as_node is not None:
                node_may_write(name, as_node, status.node_ref, node_ref or status.node_ref)
            changed = lifecycle.set_phase(
                status, name, phase, reason=reason, message=message, now=now, node_ref=node_ref
            )
            if not changed:
                return None
            current["status"] = status.to_wire()
            return current

        return mutate

    async def patch_phase(
        self,
        name: str,
        phase: ProjectPhase,
        reason: str | None = None,
        message: str | None = None,
        *,
        node_ref: str | None = None,
        resource_version: str | None = None,
        as_node: str | None = None,
    ) -> Project:
        """Move the project to ``phase`` (``node_ref`` only with Scheduled). Conflict (409)
        for an edge the phase machine refuses or a stale ``resource_version``; Forbidden
        when ``as_node`` (a node's credential) is not the node the project is bound to."""
        mutate = self._phase_mutator(name, phase, reason, message, node_ref, as_node)
        return self.decode(await self._update(name, mutate, resource_version))

    async def bind(self, bindings: Sequence[Binding]) -> list[BindingResult]:
        """Pending → Scheduled on the given nodes, all in one transaction.

        Each binding is its own write (revision, event, resourceVersion precondition); one
        that is stale, refused by the phase machine or names a missing project is skipped
        and reported, the rest still bind. Only Pending projects are bound: binding is
        placement, never a move.
        """
        updates: list[tuple[str, Mutator, str | None]] = []
        refused: dict[int, BindingResult] = {}
        for index, b in enumerate(bindings):
            if not is_dns_label(b.name) or not is_dns_label(b.node):
                refused[index] = BindingResult(
                    name=b.name, node=b.node, outcome=BindingOutcome.INVALID,
                    message="name and node must be DNS labels",
                )
                continue
            place = self._phase_mutator(
                b.name,
                ProjectPhase.SCHEDULED,
                b.reason or REASON_SCHEDULED,
                b.message or f"Scheduled onto node {b.node}",
                b.node,
            )

            def mutate(current: Obj, place: Mutator = place, name: str = b.name) -> Obj | None:
                phase = (current.get("status") or {}).get("phase")
                if phase != ProjectPhase.PENDING:
                    raise Conflict(f'project "{name}" is {phase}, not Pending')
                return place(current)

            updates.append((b.name, mutate, b.resource_version))
        outcomes: list[Obj | CaravanseraiError] = await self.store.update_many(
            self.kind, updates
        )
        results: list[BindingResult] = []
        written = iter(outcomes)
        for index, b in enumerate(bindings):
            if index in refused:
                results.append(refused[index])
                continue
            outcome = next(written)
            if isinstance(outcome, CaravanseraiError):
                kind = (
                    BindingOutcome.NOT_FOUND
                    if isinstance(outcome, NotFound)
                    else BindingOutcome.INVALID
                    if isinstance(outcome, Invalid)
                    else BindingOutcome.CONFLICT
                )
                message = (
                    f'project "{b.name}" not found' if kind is BindingOutcome.NOT_FOUND
                    else str(outcome)
                )
                results.append(
                    BindingResult(name=b.name, node=b.node, outcome=kind, message=message)
                )
                continue
            self.observed(outcome)
            results.append(
                BindingResult(
                    name=b.name,
                    node=b.node,
                    outcome=BindingOutcome.BOUND,
                    resource_version=str(revision_of(outcome)),
                )
            )
        return results

    async def delete(self, name: str, *, force: bool = False) -> DeleteOutcome:
        """Delete a project.

        * ``force``: removed at once in any phase; its containers may be orphaned.
        * no node (or already Terminated): removed at once.
        * on a node: ``deletionTimestamp`` + phase Terminating; the agent removes the
          containers, reports Terminated, the termination controller deletes.
        Both decisions are re-checked atomically by the store (precondition / mutator), and
        redone if the project moved in between (e.g. the scheduler placed it meanwhile).
        """
        store = self.store
        if force:
            try:
                old = await store.delete(self.kind, name)
            except NotFound:
                raise self.not_found(name) from None
            status = old.get("status") or {}
            if status.get("nodeRef") and status.get("phase") != ProjectPhase.TERMINATED:
                log.warning(
                    "project.force_deleted",
                    kind="Project",
                    name=name,
                    node=status.get("nodeRef"),
                    note="its containers on the node may be left behind",
                )
            self.observed(old)
            return DeleteOutcome(None)

        now = utcnow()

        def require_no_node(current: Obj) -> None:
            if _on_node(current):
                raise _Retry("project was placed on a node meanwhile")

        def terminate(current: Obj) -> Obj | None:
            if not _on_node(current):
                raise _Retry("project left its node meanwhile")
            meta = current.setdefault("metadata", {})
            changed = False
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = timestamp(now)
                changed = True
            status = ProjectStatus.model_validate(current.get("status") or {})
            if lifecycle.begin_termination(status, name, now):
                current["status"] = status.to_wire()
                changed = True
            return current if changed else None

        for _ in range(5):
            current = await self.get_stored(name)
            try:
                if not _on_node(current):
                    old = await store.delete(self.kind, name, precondition=require_no_node)
                    self.observed(old)
                    log.info("project.deleted", kind="Project", name=name)
                    return DeleteOutcome(None)
                stored = await self._update(name, terminate)
            except _Retry:
                continue
            except NotFound:
                raise self.not_found(name) from None
            log.info("project.terminating", kind="Project", name=name,
                     node=stored["status"].get("nodeRef"))
            return DeleteOutcome(self.decode(stored))
        raise Conflict(f'project "{name}" keeps changing; retry the delete')


def node_may_write(name: str, node: str, bound_to: str | None, new_ref: str | None) -> None:
    """A node's credential writes a project's status only while the project is bound to it,
    and never moves it to another node (Kubernetes' NodeRestriction); Forbidden otherwise.
    Called inside the write's mutator, so a rebind cannot slip in between."""
    if bound_to != node:
        raise Forbidden(
            f'node "{node}" may not write the status of project "{name}": '
            "the project is not bound to this node"
        )
    if new_ref != node:
        raise Forbidden(
            f'node "{node}" may not move project "{name}" to another node'
        )


def _validate(project: Project) -> None:
    errors = validate_project(project)
    if errors:
        raise Invalid(f'Project "{project.metadata.name}" is invalid', errors)
