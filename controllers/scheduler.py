"""scheduler: Pending → Scheduled onto the least-loaded Ready, schedulable node.

The original put every project on "the first Ready node" of an unordered list and only
looked at Pending projects every 30 s (REFERENCE §3.4, §10.4, §10.16). Here:

* **Which nodes.** State ``Ready`` (so not NotReady, not Draining) and not
  ``spec.unschedulable``.
* **Spread.** The node with the fewest projects wins; ties go to the smallest node name, so
  the choice is deterministic. A project counts on its node in every phase that occupies
  it: Scheduled, Running, Failed (its containers may still be there and a spec change
  redeploys it in place) and Terminating (not torn down yet).
* **Bursts.** Like kube-scheduler, a decision is *assumed* at once in an in-memory
  :class:`LoadTracker`: the next decision, a microsecond later, already counts it, long
  before the write comes back through the informer. 10,000 Pending projects over 1,000
  nodes end up exactly 10 per node. An assumption is dropped when the informer shows the
  project at a newer revision than the one the write was conditioned on (the write landed,
  or something else happened), or when the write fails.
* **Never twice.** The write is a binding ``{name, node, resourceVersion}`` with the
  project's resourceVersion as precondition: if anything changed it since our cache saw it
  (another scheduler, a delete), that binding comes back Conflict and we look again.
* **In batches.** Workers' decisions are sent together (:class:`~controllers.binder.
  BindingBatcher`): one ``bind`` call — one transaction — carries every placement decided
  while the previous batch was on its way, each with its own precondition and outcome.
* **At once.** A project entering Pending (new, or reset by the rescheduler) is an informer
  event; a node becoming schedulable (new, Ready again, uncordoned, grown) requeues every
  Pending project, and room freed on a node (a project there finished, was deleted or went
  back to Pending) requeues the projects that fit nowhere. With no node to fit on a project
  simply waits for such an event: no polling.

Counting is done incrementally from the project informer's change stream (the same data as
its ``nodeRef`` index) with a heap for the minimum, so a decision costs O(log nodes), not a
scan of every node.

Layout: the decisions are pure functions (:func:`needs_placement`, :func:`binding_for`,
:func:`unschedulable_status`, and the predicates :func:`became_schedulable` and
:func:`frees_a_node` that decide which events wake whom); :class:`Scheduler` applies them
with two write points, :meth:`Scheduler.bind` and :meth:`Scheduler.report_unschedulable`;
:func:`controller` wires it with the builder (``caravanserai.informer.builder``).
"""

from __future__ import annotations

from typing import Any

from caravanserai.api.base import Condition, ConditionStatus, get_condition, set_condition
from caravanserai.api.binding import Binding, BindingOutcome, BindingResult
from caravanserai.api.node import Node, NodeState
from caravanserai.api.phases import OCCUPYING_PHASES
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.api.project import CONDITION_SCHEDULED, Project, ProjectPhase
from caravanserai.api.requests import Amount, node_allocatable, project_request
from caravanserai.client.interface import Client
from caravanserai.informer import (
    Change,
    Controller,
    ControllerContext,
    Result,
    RunnableController,
    SharedInformer,
    index_by_phase,
    keys_in_index,
    predicate,
)
from caravanserai.informer.recorder import EventRecorder
from controllers.binder import BindingBatcher
from controllers.load_tracker import LoadTracker
from controllers.placement import REASON_UNSCHEDULABLE, Candidate, misfit, place
from controllers.settings import load_settings

__all__ = [
    "OCCUPYING_PHASES",
    "REASON_SCHEDULED",
    "LoadTracker",
    "Scheduler",
    "became_schedulable",
    "binding_for",
    "controller",
    "frees_a_node",
    "needs_placement",
    "occupied_node",
    "schedulable",
    "unschedulable_status",
    "waiting",
]

REASON_SCHEDULED = "Scheduled"
REASON_FAILED_SCHEDULING = "FailedScheduling"
PHASE_INDEX = "phase"


def schedulable(node: Node | None) -> bool:
    """True for a node that may receive new projects."""
    return node is not None and node.status.state is NodeState.READY and not node.spec.unschedulable


def occupied_node(project: Project) -> str | None:
    """The node whose load this project counts towards (None if it occupies none)."""
    if project.status.phase in OCCUPYING_PHASES and project.status.node_ref:
        return project.status.node_ref
    return None


def revision(obj: Project | Node) -> int:
    """The object's resourceVersion as a number (0 when unset)."""
    try:
        return int(obj.metadata.resource_version or 0)
    except ValueError:
        return 0


# -- decisions (pure) ------------------------------------------------------------------------


def needs_placement(project: Project | None, assumed: tuple[str, int] | None) -> bool:
    """True for a Pending project that no binding of ours is on its way for.

    ``assumed``: the tracker's ``(node, revision)`` for it. When the revision is the
    project's own, our write for exactly this version succeeded and the informer has not
    shown it yet: placing it again would only come back Conflict.
    """
    if project is None or project.status.phase is not ProjectPhase.PENDING:
        return False
    return assumed is None or assumed[1] != revision(project)


def binding_for(project: Project, node: str) -> Binding:
    """The binding that puts ``project`` on ``node``, conditioned on the version decided on."""
    return Binding(
        name=project.metadata.name,
        node=node,
        resource_version=project.metadata.resource_version,
        reason=REASON_SCHEDULED,
        message=f"Scheduled onto node {node}",
    )


def unschedulable_status(project: Project, message: str) -> Project | None:
    """The project with its ``Scheduled`` condition saying why no node fits (``message``),
    or None when it already says exactly that (one write per new reason).

    Its own condition (type Scheduled), so the Phase condition keeps saying why the project
    is Pending (new, or moved off a NotReady node).
    """
    current = get_condition(project.status.conditions, CONDITION_SCHEDULED)
    if current is not None and (current.reason, current.message) == (
        REASON_UNSCHEDULABLE, message
    ):
        return None
    body = project.model_copy(deep=True)
    set_condition(body.status.conditions, Condition(
        type=CONDITION_SCHEDULED, status=ConditionStatus.FALSE,
        reason=REASON_UNSCHEDULABLE, message=message,
    ))
    return body


@predicate
def waiting(change: Change[Project]) -> bool:
    """A project (still there) that is Pending: it is to be placed."""
    return change.new is not None and change.new.status.phase is ProjectPhase.PENDING


@predicate
def became_schedulable(change: Change[Node]) -> bool:
    """New capacity: a node that turned schedulable (new, Ready again, uncordoned) or whose
    allocatable changed while schedulable. Every waiting project gets another look."""
    old, new = change.old, change.new
    if new is None or not schedulable(new):
        return False
    return not schedulable(old) or (
        old is not None and old.status.allocatable != new.status.allocatable
    )


@predicate
def frees_a_node(change: Change[Project]) -> bool:
    """Room on a node: the project stopped counting on the node it occupied (it finished,
    was deleted, or went back to Pending)."""
    before = occupied_node(change.old) if change.old is not None else None
    after = occupied_node(change.new) if change.new is not None else None
    return before is not None and before != after


# -- applying them -----------------------------------------------------------------------------


class Scheduler:
    """The reconciler: place one Pending project. Its tracker and its set of projects that
    fit nowhere are kept current by :meth:`observe_project` and :meth:`observe_node`."""

    def __init__(
        self,
        client: Client,
        projects: SharedInformer[Project],
        nodes: SharedInformer[Node],
        tracker: LoadTracker,
        log: Any,
        binder: BindingBatcher | None = None,
        recorder: EventRecorder | None = None,
    ) -> None:
        self.client = client
        # Scheduled / FailedScheduling events (none when no recorder is given).
        self.recorder = recorder
        self.binder = binder or BindingBatcher(client.projects)
        self.projects = projects
        self.nodes = nodes
        self.tracker = tracker
        self.log = log
        # Pending projects no node fits now: retried when nodes or load change.
        self.unschedulable: set[str] = set()

    # -- state from the events (observers) ---------------------------------------------------

    def observe_project(self, change: Change[Project]) -> None:
        """Count the project where the informer shows it (and what it requests)."""
        name = change.object.metadata.name
        project = change.new
        if project is None:
            self.unschedulable.discard(name)
            self.tracker.forget(name)
            return
        self.tracker.set_request(name, project_request(project))
        self.tracker.observe(name, occupied_node(project), revision(project))
        if project.status.phase is not ProjectPhase.PENDING:
            self.unschedulable.discard(name)

    def observe_node(self, change: Change[Node]) -> None:
        """Record whether the node may receive projects."""
        if change.new is None:
            self.tracker.remove_node(change.object.metadata.name)
        else:
            self.tracker.set_node(change.new.metadata.name, schedulable(change.new))

    def waiting_for_room(self, _change: Change[Project]) -> list[str]:
        """The projects that fit nowhere (a ``map_to`` for :func:`frees_a_node`)."""
        return sorted(self.unschedulable)

    # -- the reconcile -----------------------------------------------------------------------

    async def reconcile(self, name: str) -> Result | None:
        """Schedule project ``name`` if it is Pending."""
        project = self.projects.get(name)
        if project is None or not needs_placement(project, self.tracker.assumed(name)):
            return None
        request = project_request(project)
        self.tracker.set_request(name, request)
        # Without requests the tracker's heap decides in O(log nodes); with requests the
        # nodes are filtered by what is left on them.
        node = self.choose() if request.zero else self.fit(request)
        if node is None:
            _, message = place(request, self._candidates())
            await self.report_unschedulable(project, message)
            return None
        self.unschedulable.discard(name)
        return await self.bind(project, node)

    def choose(self) -> str | None:
        """The least-loaded schedulable node, double-checked against the node cache (the
        tracker's node handler may lag it by a few events)."""
        while (node := self.tracker.pick()) is not None:
            if schedulable(self.nodes.get(node)):
                return node
            self.tracker.set_node(node, False)
        return None

    def fit(self, request: Amount) -> str | None:
        """The least-loaded node ``request`` fits on. The spread pick usually fits (O(log
        nodes)); only when it does not are all nodes filtered (O(nodes))."""
        first = self.choose()
        if first is None:
            return None
        n = self.nodes.get(first)
        if n is not None and not misfit(
            request, node_allocatable(n), self.tracker.allocated(first)
        ):
            return first
        node, _ = place(request, self._candidates())
        return node

    def _candidates(self) -> list[Candidate]:
        return [
            Candidate(n.metadata.name, n, self.tracker.load(n.metadata.name),
                      self.tracker.allocated(n.metadata.name))
            for n in self.nodes.list()
        ]

    # -- the writes ----------------------------------------------------------------------------

    async def bind(self, project: Project, node: str) -> Result | None:
        """Write point: bind ``project`` to ``node`` (batched with the other workers'
        bindings), counting it there from now on; undo the count if it does not land."""
        name = project.metadata.name
        # Assume before the first await: concurrent workers see this decision at once.
        self.tracker.assume(name, node, revision(project))
        try:
            result = await self.binder.bind(binding_for(project, node))
        except BaseException:
            self.tracker.unassume(name)
            raise
        settled = self._settle(name, node, result)
        if result.outcome is BindingOutcome.BOUND and self.recorder is not None:
            self.recorder.normal(
                "Project", name, REASON_SCHEDULED, f"Successfully assigned {name} to {node}",
                uid=project.metadata.uid,
            )
        return settled

    def _settle(self, name: str, node: str, result: BindingResult) -> Result | None:
        if result.outcome is BindingOutcome.CONFLICT:
            # Changed since our cache saw it (or no longer Pending): look again once the
            # informer has caught up. Never a second assignment: the precondition failed.
            self.tracker.unassume(name)
            self.log.debug(
                "project.schedule_conflict", kind="Project", name=name, error=result.message
            )
            return Result(requeue=True)
        if result.outcome is not BindingOutcome.BOUND:
            self.tracker.unassume(name)
            if result.outcome is BindingOutcome.INVALID:
                self.log.warning(
                    "project.binding_refused", kind="Project", name=name, error=result.message
                )
            return None
        self.log.info(
            "project.scheduled", kind="Project", name=name, node=node, load=self.tracker.load(node)
        )
        return None

    async def report_unschedulable(self, project: Project, message: str) -> None:
        """Write point: say why on the project (Pending, reason Unschedulable), once per new
        reason; it waits for a node or load event (no polling)."""
        name = project.metadata.name
        self.unschedulable.add(name)
        self.log.info("project.unschedulable", kind="Project", name=name, reason=message)
        if self.recorder is not None:
            # Every failed attempt (a retry comes when nodes or load change): the event's
            # count says how often, as Kubernetes' FailedScheduling does.
            self.recorder.warning(
                "Project", name, REASON_FAILED_SCHEDULING, message, uid=project.metadata.uid
            )
        body = unschedulable_status(project, message)
        if body is None:
            return
        try:
            await self.client.projects.update_status(body)
        except (Conflict, NotFound) as exc:
            # It changed meanwhile: the informer event that follows brings it back here.
            self.log.debug("project.unschedulable_write_skipped", kind="Project", name=name,
                           error=str(exc))

    async def close(self) -> None:
        """Cancel bindings still on their way (the controller awaits this when it stops)."""
        await self.binder.close()
        if self.recorder is not None:
            await self.recorder.aclose()


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``scheduler``: a Pending project is placed as soon as it is seen; a node
    turning schedulable requeues every Pending project, room freed on a node requeues the
    projects that fit nowhere (each coalesced to once per loop turn)."""
    settings = load_settings(ctx.name, ctx.config)
    indexers = {PHASE_INDEX: index_by_phase}
    scheduler = Scheduler(
        ctx.client,
        ctx.informers.projects(indexers=indexers),
        ctx.informers.nodes(),
        LoadTracker(),
        ctx.log,
        recorder=EventRecorder(ctx.client, "scheduler", clock=ctx.clock, log=ctx.log),
    )
    return (
        Controller.for_(Project, indexers=indexers, predicate=waiting)
        .observe(Project, scheduler.observe_project)
        .observe(Node, scheduler.observe_node)
        .watches(Project, map_to=scheduler.waiting_for_room, predicate=frees_a_node,
                 coalesce=True)
        .watches(Node, map_to=keys_in_index(PHASE_INDEX, ProjectPhase.PENDING),
                 predicate=became_schedulable, coalesce=True)
        .workers(settings.workers)
        .complete(lambda _ctx: scheduler)
        .build(ctx)
    )
