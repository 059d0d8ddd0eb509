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
  event; a node becoming schedulable (new, Ready again, uncordoned) requeues every Pending
  project. With no schedulable node a project simply waits for such an event: no polling.

Counting is done incrementally from the project informer's change stream (the same data as
its ``nodeRef`` index) with a heap for the minimum, so a decision costs O(log nodes), not a
scan of every node.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from caravanserai.api.base import Condition, ConditionStatus, get_condition, set_condition
from caravanserai.api.binding import Binding, BindingOutcome
from caravanserai.api.node import Node, NodeState
from caravanserai.api.phases import OCCUPYING_PHASES
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.api.project import CONDITION_SCHEDULED, Project, ProjectPhase
from caravanserai.api.requests import ZERO, Amount, node_allocatable, project_request
from caravanserai.client.interface import Client
from caravanserai.informer import (
    Controller,
    ControllerContext,
    HandlerRegistration,
    Result,
    RunnableController,
    SharedInformer,
    index_by_phase,
)
from caravanserai.informer.recorder import EventRecorder
from controllers.binder import BindingBatcher
from controllers.placement import REASON_UNSCHEDULABLE, Candidate, misfit, place
from controllers.settings import load_settings

__all__ = [
    "OCCUPYING_PHASES",
    "REASON_SCHEDULED",
    "LoadTracker",
    "Scheduler",
    "SchedulerController",
    "controller",
    "occupied_node",
    "schedulable",
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


class LoadTracker:
    """Projects per node — observed through the informer plus assumed by the scheduler.

    Pure bookkeeping (no I/O), driven by: :meth:`observe`/:meth:`forget` from the project
    informer, :meth:`set_node`/:meth:`remove_node` from the node informer, and
    :meth:`assume`/:meth:`unassume` from scheduling decisions. :meth:`pick` returns the
    eligible node with the lowest load (ties: the smallest name).
    """

    def __init__(self) -> None:
        self._observed: dict[str, str] = {}
        # project -> (node, the revision the write was conditioned on)
        self._assumed: dict[str, tuple[str, int]] = {}
        self._load: dict[str, int] = {}
        self._eligible: set[str] = set()
        # (load, node) entries; stale ones (load moved on, node no longer eligible) are
        # skipped lazily by pick() and purged when the heap grows too large.
        self._heap: list[tuple[int, str]] = []
        # Resource requests of projects that have any, and their sums per node.
        self._requests: dict[str, Amount] = {}
        self._allocated: dict[str, Amount] = {}

    # -- reads ----------------------------------------------------------------------------

    def load(self, node: str) -> int:
        """Projects counted on ``node`` (observed and assumed)."""
        return self._load.get(node, 0)

    def node_of(self, project: str) -> str | None:
        """The node ``project`` is counted on (assumed or observed), if any."""
        return self._effective(project)

    def allocated(self, node: str) -> Amount:
        """Summed requests of the projects counted on ``node``."""
        return self._allocated.get(node, ZERO)

    def loads(self) -> dict[str, int]:
        """Load of every eligible node."""
        return {n: self._load.get(n, 0) for n in self._eligible}

    def assumed(self, project: str) -> tuple[str, int] | None:
        """``(node, revision)`` of an assumption not yet confirmed by the informer."""
        return self._assumed.get(project)

    @property
    def eligible(self) -> frozenset[str]:
        """Nodes that may receive projects."""
        return frozenset(self._eligible)

    def pick(self) -> str | None:
        """The eligible node with the fewest projects (smallest name on ties), or None."""
        heap = self._heap
        while heap:
            load, node = heap[0]
            if node in self._eligible and self._load.get(node, 0) == load:
                return node
            heapq.heappop(heap)
        return None

    # -- nodes ----------------------------------------------------------------------------

    def set_node(self, node: str, eligible: bool) -> None:
        """Record whether ``node`` may receive projects."""
        if not eligible:
            self._eligible.discard(node)
            return
        if node not in self._eligible:
            self._eligible.add(node)
            self._push(node)

    def remove_node(self, node: str) -> None:
        """The node is gone (its projects stay counted until they move)."""
        self._eligible.discard(node)

    # -- projects -------------------------------------------------------------------------

    def set_request(self, project: str, amount: Amount) -> None:
        """Record what ``project`` requests (its spec may change while it sits on a node)."""
        old = self._requests.get(project, ZERO)
        if amount == old:
            return
        node = self._effective(project)
        if node is not None:
            self._allocated[node] = self._allocated.get(node, ZERO) + amount - old
        if amount.zero:
            self._requests.pop(project, None)
        else:
            self._requests[project] = amount

    def observe(self, project: str, node: str | None, rv: int) -> None:
        """The informer shows ``project`` at revision ``rv`` occupying ``node`` (or none).

        An assumption survives only events older than (or equal to) the write it stands for.
        """
        before = self._effective(project)
        assumption = self._assumed.get(project)
        if assumption is not None and rv > assumption[1]:
            del self._assumed[project]
        if node is None:
            self._observed.pop(project, None)
        else:
            self._observed[project] = node
        self._move(before, self._effective(project), project)

    def forget(self, project: str) -> None:
        """The project was deleted."""
        before = self._effective(project)
        self._observed.pop(project, None)
        self._assumed.pop(project, None)
        self._move(before, None, project)
        self._requests.pop(project, None)

    def assume(self, project: str, node: str, rv: int) -> None:
        """Count ``project`` on ``node`` now; ``rv`` is the revision the write is based on."""
        before = self._effective(project)
        self._assumed[project] = (node, rv)
        self._move(before, node, project)

    def unassume(self, project: str) -> None:
        """The write failed: count the project where the informer last saw it."""
        before = self._effective(project)
        if self._assumed.pop(project, None) is not None:
            self._move(before, self._effective(project), project)

    # -- internals ------------------------------------------------------------------------

    def _effective(self, project: str) -> str | None:
        assumption = self._assumed.get(project)
        return assumption[0] if assumption is not None else self._observed.get(project)

    def _move(self, before: str | None, after: str | None, project: str) -> None:
        if before == after:
            return
        amount = self._requests.get(project)
        if amount is not None:
            if before is not None:
                left = self._allocated.get(before, ZERO) - amount
                if left.zero:
                    self._allocated.pop(before, None)
                else:
                    self._allocated[before] = left
            if after is not None:
                self._allocated[after] = self._allocated.get(after, ZERO) + amount
        if before is not None:
            self._load[before] = self._load.get(before, 0) - 1
            if self._load[before] <= 0:
                del self._load[before]
            self._push(before)
        if after is not None:
            self._load[after] = self._load.get(after, 0) + 1
            self._push(after)

    def _push(self, node: str) -> None:
        if node not in self._eligible:
            return
        heapq.heappush(self._heap, (self._load.get(node, 0), node))
        if len(self._heap) > 4 * len(self._eligible) + 1024:
            self._heap = [(self._load.get(n, 0), n) for n in self._eligible]
            heapq.heapify(self._heap)


class Scheduler:
    """The reconciler: place one Pending project."""

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

    def choose(self) -> str | None:
        """The least-loaded schedulable node, double-checked against the node cache (the
        tracker's node handler may lag it by a few events)."""
        while (node := self.tracker.pick()) is not None:
            if schedulable(self.nodes.get(node)):
                return node
            self.tracker.set_node(node, False)
        return None

    async def reconcile(self, name: str) -> Result | None:
        """Schedule project ``name`` if it is Pending."""
        project = self.projects.get(name)
        if project is None or project.status.phase is not ProjectPhase.PENDING:
            return None
        rv = revision(project)
        assumption = self.tracker.assumed(name)
        if assumption is not None and assumption[1] == rv:
            # Our write for exactly this version succeeded; the informer has not shown it yet.
            return None
        request = project_request(project)
        self.tracker.set_request(name, request)
        # Without requests the tracker's heap decides in O(log nodes); with requests the
        # nodes are filtered by what is left on them.
        node = self.choose() if request.zero else self.fit(request)
        if node is None:
            await self._unschedulable(project, request)
            return None
        self.unschedulable.discard(name)
        # Assume before the first await: concurrent workers see this decision at once.
        self.tracker.assume(name, node, rv)
        binding = Binding(
            name=name,
            node=node,
            resource_version=project.metadata.resource_version,
            reason=REASON_SCHEDULED,
            message=f"Scheduled onto node {node}",
        )
        try:
            result = await self.binder.bind(binding)
        except BaseException:
            self.tracker.unassume(name)
            raise
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
        if self.recorder is not None:
            self.recorder.normal(
                "Project", name, REASON_SCHEDULED, f"Successfully assigned {name} to {node}",
                uid=project.metadata.uid,
            )
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

    async def _unschedulable(self, project: Project, request: Amount) -> None:
        """Say why on the project (Pending, reason Unschedulable), once per new reason."""
        name = project.metadata.name
        self.unschedulable.add(name)
        _, message = place(request, self._candidates())
        self.log.info("project.unschedulable", kind="Project", name=name, reason=message)
        if self.recorder is not None:
            # Every failed attempt (a retry comes when nodes or load change): the event's
            # count says how often, as Kubernetes' FailedScheduling does.
            self.recorder.warning(
                "Project", name, REASON_FAILED_SCHEDULING, message, uid=project.metadata.uid
            )
        # Its own condition (type Scheduled), so the Phase condition keeps saying why the
        # project is Pending (new, or moved off a NotReady node).
        current = get_condition(project.status.conditions, CONDITION_SCHEDULED)
        if current is not None and (current.reason, current.message) == (
            REASON_UNSCHEDULABLE, message
        ):
            return
        body = project.model_copy(deep=True)
        set_condition(body.status.conditions, Condition(
            type=CONDITION_SCHEDULED, status=ConditionStatus.FALSE,
            reason=REASON_UNSCHEDULABLE, message=message,
        ))
        try:
            await self.client.projects.update_status(body)
        except (Conflict, NotFound) as exc:
            # It changed meanwhile: the informer event that follows brings it back here.
            self.log.debug("project.unschedulable_write_skipped", kind="Project", name=name,
                           error=str(exc))


class SchedulerController:
    """The runnable: waits until the tracker has counted the initial lists, then runs the
    controller's workers."""

    def __init__(
        self,
        controller: Controller[str],
        registrations: list[HandlerRegistration[Any]],
        binder: BindingBatcher | None = None,
        recorder: EventRecorder | None = None,
    ) -> None:
        self.controller = controller
        self.registrations = registrations
        self.binder = binder
        self.recorder = recorder

    async def run(self) -> None:
        """Run until cancelled."""
        try:
            for registration in self.registrations:
                await registration.wait_for_sync()
            await self.controller.run()
        finally:
            if self.binder is not None:
                await self.binder.close()
            if self.recorder is not None:
                await self.recorder.aclose()


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``scheduler``."""
    settings = load_settings(ctx.name, ctx.config)
    projects = ctx.informers.projects(indexers={PHASE_INDEX: index_by_phase})
    nodes = ctx.informers.nodes()
    tracker = LoadTracker()
    binder = BindingBatcher(ctx.client.projects)
    recorder = EventRecorder(ctx.client, "scheduler", clock=ctx.clock, log=ctx.log)
    reconciler = Scheduler(ctx.client, projects, nodes, tracker, ctx.log, binder, recorder)
    ctrl: Controller[str] = Controller(
        ctx.name, reconciler, workers=settings.workers, clock=ctx.clock, kind="Project"
    )

    def project_changed(project: Project) -> None:
        name = project.metadata.name
        before = tracker.node_of(name)
        tracker.set_request(name, project_request(project))
        tracker.observe(name, occupied_node(project), revision(project))
        if project.status.phase is ProjectPhase.PENDING:
            ctrl.enqueue(name)
        else:
            reconciler.unschedulable.discard(name)
        if before is not None and tracker.node_of(name) != before:
            load_freed()

    def project_deleted(project: Project) -> None:
        name = project.metadata.name
        reconciler.unschedulable.discard(name)
        freed = tracker.node_of(name) is not None
        tracker.forget(name)
        if freed:
            load_freed()

    requeue_scheduled = False

    def load_freed() -> None:
        """Room on a node: the projects that fit nowhere get another look (coalesced)."""
        nonlocal requeue_scheduled
        if not reconciler.unschedulable or requeue_scheduled:
            return
        requeue_scheduled = True
        asyncio.get_running_loop().call_soon(requeue_pending)

    def requeue_pending() -> None:
        nonlocal requeue_scheduled
        requeue_scheduled = False
        for name in projects.cache.index_keys(PHASE_INDEX, ProjectPhase.PENDING):
            ctrl.enqueue(name)

    def node_changed(old: Node | None, node: Node) -> None:
        nonlocal requeue_scheduled
        ok = schedulable(node)
        tracker.set_node(node.metadata.name, ok)
        # New capacity: every waiting project gets another chance now. Not during the
        # initial list (the projects' own initial adds queue them), and coalesced: a burst
        # of nodes turning Ready requeues the Pending projects once, not once per node.
        grown = ok and old is not None and old.status.allocatable != node.status.allocatable
        if ok and (not schedulable(old) or grown) and node_registration.has_synced:
            if requeue_scheduled:
                return
            requeue_scheduled = True
            asyncio.get_running_loop().call_soon(requeue_pending)

    project_registration = projects.add_handler(
        on_add=project_changed,
        on_update=lambda _old, new: project_changed(new),
        on_delete=project_deleted,
        name=f"{ctx.name}/tracker/Project",
    )
    node_registration = nodes.add_handler(
        on_add=lambda node: node_changed(None, node),
        on_update=node_changed,
        on_delete=lambda node: tracker.remove_node(node.metadata.name),
        name=f"{ctx.name}/tracker/Node",
    )
    registrations: list[HandlerRegistration[Any]] = [project_registration, node_registration]
    ctrl.wait_for(projects)
    ctrl.wait_for(nodes)
    return SchedulerController(ctrl, registrations, binder, recorder)
