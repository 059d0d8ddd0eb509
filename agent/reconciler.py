"""The project reconciler: one project's Docker objects in line with its spec and phase.

Level-triggered and stateless: every call reads the project from the informer cache and
the containers from Docker (by label), whatever event caused it. The controller runner
guarantees one project is never reconciled by two workers at once.

Per phase:

- Scheduled / Running (or a new generation): converge — network, volumes, containers —
  then report ``Running`` or ``Failed`` with the ``ContainersRunning`` condition,
  per-service states and ``observedGeneration``.
- Failed at the generation it failed with: hands off (no pull, create or start; the seeds
  say fix and redeploy). It still observes: a project whose containers all run again
  (someone restarted them) is reported Running.
- Terminating: remove containers, network and volumes, then report ``Terminated``.
- Not assigned to this node any more (force-deleted, rescheduled away, absent from the
  cache): confirm with the server, then remove whatever is labelled with it on this node.

Status writes are ``PUT …/status`` with the resourceVersion read: a 409 means the world
moved on, so the agent re-reads and re-applies its observation only if it still applies
(it never fights a delete).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from agent import naming
from agent.desired import ContainerSpec, HostPolicy, ProjectPlan, SpecError, plan_project
from agent.ordering import completes, unmet_dependencies
from agent.proxy import RouteTable, routes_for
from agent.restarts import BackOff, RestartTracker, wants_restart
from agent.runtime import ContainerInfo, NameConflict, ResourceBusy, Runtime, RuntimeFailure
from agent.status import (
    Failure,
    ServiceContext,
    apply_observation,
    observe,
    terminated_status,
)
from caravanserai.api import (
    Conflict,
    NotFound,
    Project,
    ProjectPhase,
    ProjectStatus,
    ServiceStatus,
)
from caravanserai.api.event import EventKind
from caravanserai.api.problems import Forbidden
from caravanserai.client import CaravanseraiClient
from caravanserai.informer.clock import Clock, RealClock
from caravanserai.informer.controller import Result
from caravanserai.informer.informer import SharedInformer
from caravanserai.informer.recorder import EventRecorder

log = structlog.get_logger("agent.reconciler")

STARTING_RECHECK = 1.0
BUSY_RECHECK = 1.0
STATUS_WRITE_ATTEMPTS = 4
# While a healthcheck is still "starting", look again this often (health_status events
# trigger a reconcile too; this covers an event lost while the stream reconnects).
HEALTH_RECHECK = 2.0


@dataclass
class ReconcilerSettings:
    node: str
    environment: str = "dev"
    base_domain: str = "cara.local"
    stop_timeout: float = 10.0
    # CrashLoopBackOff: first delay, doubling up to the cap; reset after running this long.
    restart_backoff: float = 10.0
    restart_backoff_max: float = 300.0
    restart_backoff_reset: float = 600.0
    policy: HostPolicy = field(default_factory=HostPolicy)


@dataclass
class _ServiceOutcome:
    service: str
    failure: Failure | None = None
    busy: ResourceBusy | None = None
    acted: list[str] = field(default_factory=list)


def container_ip(info: ContainerInfo, project: str) -> str | None:
    """The container's address on the project network (else any it has)."""
    return info.ips.get(naming.network_name(project)) or next(iter(info.ips.values()), None)


def _not_ready_detail(status: ServiceStatus) -> str:
    if status.state == "running" and status.health:
        return f"health: {status.health}"
    return str(status.state)


def _is_ours(info: ContainerInfo | None, project: str, node: str) -> bool:
    return (
        info is not None
        and info.labels.get(naming.LABEL_PROJECT) == project
        and info.labels.get(naming.LABEL_NODE) == node
    )


class ProjectReconciler:
    def __init__(
        self,
        *,
        settings: ReconcilerSettings,
        runtime: Runtime,
        client: CaravanseraiClient,
        projects: SharedInformer[Project],
        routes: RouteTable,
        clock: Clock | None = None,
        recorder: EventRecorder | None = None,
    ) -> None:
        self.settings = settings
        # Events about the projects this node runs (none without a recorder). Reporting
        # never waits: the recorder queues and writes in the background.
        self.recorder = recorder
        # The last exit reported as BackOff and the last health seen, per (uid, service):
        # an event per new exit or health change, not one per recheck.
        self._backoff_reported: dict[tuple[str, str], str] = {}
        self._health_seen: dict[tuple[str, str], str | None] = {}
        self.node = settings.node
        self.runtime = runtime
        self.client = client
        self.projects = projects
        self.routes = routes
        self.restarts = RestartTracker(
            clock or RealClock(),
            base=settings.restart_backoff,
            cap=settings.restart_backoff_max,
            reset_after=settings.restart_backoff_reset,
        )

    def _event(
        self, spec: ContainerSpec, type_: EventKind, reason: str, message: str
    ) -> None:
        if self.recorder is not None:
            self.recorder.event(
                "Project", spec.project, type_, reason, message,
                uid=spec.labels.get(naming.LABEL_UID) or None,
            )

    # -- entry point ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.debug("reconcile started", project=key)
        try:
            return await self._reconcile(key)
        except ResourceBusy as exc:
            log.info("waiting for another node's copy to go", project=key, detail=str(exc))
            return Result(requeue_after=BUSY_RECHECK)
        finally:
            log.debug("reconcile finished", project=key,
                      seconds=round(loop.time() - started, 3))

    async def _reconcile(self, key: str) -> Result | None:
        project = self.projects.get(key)
        if project is None or project.status.node_ref != self.node:
            return await self._reconcile_absent(key)
        phase = project.status.phase
        if phase == ProjectPhase.TERMINATED:
            self.routes.remove_project(key)
            await self.teardown(key)
            return None
        if phase == ProjectPhase.TERMINATING:
            return await self._terminate(project)
        if phase not in (ProjectPhase.SCHEDULED, ProjectPhase.RUNNING, ProjectPhase.FAILED):
            return None  # Pending: not ours to act on
        generation = project.metadata.generation
        if phase == ProjectPhase.FAILED and project.status.observed_generation == generation:
            return await self._observe_failed(project)
        return await self._converge(project)

    # -- converge ---------------------------------------------------------------------------

    async def _converge(self, project: Project) -> Result | None:
        name = project.metadata.name
        plog = log.bind(project=name, generation=project.metadata.generation)
        try:
            plan = plan_project(project, self.node, self.settings.policy)
        except SpecError as exc:
            plog.warning("spec cannot be deployed", reason=exc.reason, error=exc.message)
            await self._report(project, [Failure(exc.reason, exc.message)], {})
            return None
        rollout = project.status.observed_generation != project.metadata.generation

        existing = await self.runtime.list_containers(
            {naming.LABEL_PROJECT: name, naming.LABEL_NODE: self.node}
        )
        by_service, stale = self._sort_existing(plan, existing)
        if stale:
            plog.info("removing containers not in the spec",
                      containers=[c.name for c in stale])
            await self._remove_containers(stale)

        try:
            await self._ensure_network(plan)
        except RuntimeFailure as exc:
            await self._report(project, [Failure(exc.reason, exc.message)], {})
            return None
        volume_failures = await self._ensure_volumes(plan)
        if volume_failures:
            await self._report(project, volume_failures, {})
            return None

        uid = project.metadata.uid or name
        reported = {s.name: s.restart_count or 0 for s in project.status.services}
        healthchecked = frozenset(c.service for c in plan.containers if c.has_healthcheck)
        waiting: dict[str, str] = {}
        backoffs: dict[str, BackOff] = {}
        restarted: list[_ServiceOutcome] = []
        to_ensure: list[ContainerSpec] = []
        for spec in plan.containers:
            info = by_service.get(spec.service)
            fresh = info is None or info.labels.get(naming.LABEL_CONFIG_HASH) != spec.config_hash
            if fresh or (info is not None and info.state == "created"):
                unmet = unmet_dependencies(spec, by_service, set(healthchecked))
                if unmet:
                    waiting[spec.service] = "waiting for " + ", ".join(unmet)
                    continue
            elif (
                info is not None
                and info.state in ("exited", "dead")
                and wants_restart(spec.restart, info.exit_code)
            ):
                # Even in a rollout: a spec update does not skip the backoff (as Kubernetes).
                outcome = await self._restart_policy(
                    uid, spec, info, reported.get(spec.service, 0), backoffs
                )
                if outcome is not None:
                    restarted.append(outcome)
                continue
            to_ensure.append(spec)

        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._ensure_service(spec, by_service.get(spec.service), rollout))
                for spec in to_ensure
            ]
        outcomes = [*restarted, *(t.result() for t in tasks)]
        for outcome in outcomes:
            if outcome.acted:
                plog.info("service converged", service=outcome.service, actions=outcome.acted)
            if "started" in outcome.acted:
                self.restarts.started(uid, outcome.service)
        for outcome in outcomes:
            if outcome.busy is not None:
                raise outcome.busy
        failures = [o.failure for o in outcomes if o.failure is not None]
        for service, wait in waiting.items():
            plog.info("service waiting for its dependencies", service=service, detail=wait)

        await self._remove_undeclared_volumes(plan)
        observed = await self._observed_containers(plan)
        for spec in plan.containers:
            # An exit seen only now (it crashed right after this pass started it): its
            # backoff starts now, so the project is not reported Failed in between.
            info = observed.get(spec.service)
            if (
                spec.service not in backoffs
                and info is not None
                and info.state in ("exited", "dead")
                and wants_restart(spec.restart, info.exit_code)
            ):
                exit_id = f"{info.id}@{info.finished_at or ''}"
                backoff = self.restarts.on_exit(
                    uid, spec.service, exit_id, info.exit_code, reported.get(spec.service, 0),
                )
                backoffs[spec.service] = backoff or BackOff(
                    spec.service, 0.0, 0.0, info.exit_code
                )
                if backoff is not None:
                    self._report_backoff(uid, spec, exit_id)
        self._report_health(uid, plan, observed)
        context = ServiceContext(
            backoffs=backoffs,
            restart_counts={
                c.service: self.restarts.count(uid, c.service, reported.get(c.service, 0))
                for c in plan.containers
            },
            waiting=waiting,
            healthchecked=healthchecked,
            completes=frozenset(completes(plan.containers)),
        )
        result = await self._report(project, failures, observed, context)
        delays = [b.remaining for b in backoffs.values()]
        if waiting:
            delays.append(STARTING_RECHECK)
        if any(
            info is not None and info.health == "starting" for info in observed.values()
        ):
            delays.append(HEALTH_RECHECK)
        if result is not None and result.requeue_after is not None:
            delays.append(result.requeue_after)
        return Result(requeue_after=min(delays)) if delays else result

    async def _restart_policy(
        self,
        uid: str,
        spec: ContainerSpec,
        info: ContainerInfo,
        reported: int,
        backoffs: dict[str, BackOff],
    ) -> _ServiceOutcome | None:
        """An exited container its policy restarts: wait out the backoff, or start it now."""
        detail = await self.runtime.inspect_container(info.id)
        exit_id = f"{info.id}@{detail.finished_at if detail else ''}"
        exit_code = detail.exit_code if detail is not None else info.exit_code
        backoff = self.restarts.on_exit(uid, spec.service, exit_id, exit_code, reported)
        if backoff is not None:
            backoffs[spec.service] = backoff
            log.info("service backing off before its restart", project=spec.project,
                     service=spec.service, exit_code=exit_code,
                     seconds=round(backoff.remaining, 3))
            self._report_backoff(uid, spec, exit_id)
            return None
        outcome = _ServiceOutcome(spec.service)
        try:
            await self.runtime.start_container(info.id)
        except RuntimeFailure as exc:
            outcome.failure = Failure(exc.reason, exc.message, spec.service)
            return outcome
        count = self.restarts.restarted(uid, spec.service)
        outcome.acted.append(f"restarted (policy {spec.restart.value}, restart {count})")
        self._event(spec, EventKind.NORMAL, "Started", f"Started container {spec.name}")
        return outcome

    def _forget_reported(self, uid: str) -> None:
        for seen in (self._backoff_reported, self._health_seen):
            for key in [k for k in seen if k[0] == uid]:
                del seen[key]

    def _report_backoff(self, uid: str, spec: ContainerSpec, exit_id: str) -> None:
        """One BackOff occurrence per exit (the recheck during the wait adds none)."""
        key = (uid, spec.service)
        if self._backoff_reported.get(key) == exit_id:
            return
        self._backoff_reported[key] = exit_id
        # The message leaves out the delay and exit code so occurrences aggregate.
        self._event(spec, EventKind.WARNING, "BackOff",
                    f"Back-off restarting failed container {spec.name}")

    def _report_health(
        self, uid: str, plan: ProjectPlan, observed: dict[str, ContainerInfo | None]
    ) -> None:
        """Unhealthy when a container's healthcheck turns unhealthy (once per change)."""
        for spec in plan.containers:
            info = observed.get(spec.service)
            health = info.health if info is not None else None
            key = (uid, spec.service)
            before = self._health_seen.get(key)
            self._health_seen[key] = health
            if health == "unhealthy" and before != "unhealthy":
                self._event(spec, EventKind.WARNING, "Unhealthy",
                            f"Health check of container {spec.name} failed")

    def _sort_existing(
        self, plan: ProjectPlan, existing: list[ContainerInfo]
    ) -> tuple[dict[str, ContainerInfo], list[ContainerInfo]]:
        """Containers of the plan's services by service; the rest (old uid, unknown
        service, or not the deterministic name) to remove."""
        wanted = {c.service: c.name for c in plan.containers}
        by_service: dict[str, ContainerInfo] = {}
        stale: list[ContainerInfo] = []
        for info in existing:
            service = info.service
            if (
                service not in wanted
                or info.name != wanted[service]
                or (plan.uid and info.labels.get(naming.LABEL_UID) != plan.uid)
            ):
                stale.append(info)
            else:
                by_service[service] = info
        return by_service, stale

    def _check_owner(
        self, kind: str, name: str, labels: dict[str, str], project: str
    ) -> None:
        """The object must be this project's. Another project's (names like ``a`` + ``b-c``
        and ``a-b`` + ``c`` meet in ``a-b-c``) or one nobody manages is never stopped,
        removed or reused: NameConflict, the project is Failed. Another node's copy of this
        project on a shared engine: wait for its sweep."""
        holder = labels.get(naming.LABEL_PROJECT)
        if holder != project:
            raise NameConflict(naming.conflict_message(kind, name, holder))
        owner = labels.get(naming.LABEL_NODE)
        if owner not in (None, self.node):
            raise ResourceBusy(
                f'{kind} "{name}" still belongs to node {owner!r}; waiting for its removal'
            )

    async def _ensure_network(self, plan: ProjectPlan) -> None:
        labels = await self.runtime.ensure_network(plan.network, plan.network_labels)
        self._check_owner("network", plan.network, labels, plan.project)
        if plan.uid and labels.get(naming.LABEL_UID) not in (None, plan.uid):
            # Left by an earlier project of the same name (its containers are gone by now).
            log.info("replacing network of an earlier incarnation", project=plan.project)
            await self.runtime.remove_network(plan.network)
            await self.runtime.ensure_network(plan.network, plan.network_labels)

    async def _ensure_volumes(self, plan: ProjectPlan) -> list[Failure]:
        async def one(volume_name: str, labels: dict[str, str]) -> Failure | None:
            try:
                found = await self.runtime.ensure_volume(volume_name, labels)
                self._check_owner("volume", volume_name, found, plan.project)
                if plan.uid and found.get(naming.LABEL_UID) not in (None, plan.uid):
                    # Ephemeral data of an earlier incarnation must not leak into this one.
                    await self.runtime.remove_volume(volume_name)
                    await self.runtime.ensure_volume(volume_name, labels)
            except RuntimeFailure as exc:
                return Failure(exc.reason, exc.message)
            except ResourceBusy as exc:
                busy.append(exc)
            return None

        busy: list[ResourceBusy] = []
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(v.name, v.labels)) for v in plan.volumes]
        if busy:
            raise busy[0]
        return [f for t in tasks if (f := t.result()) is not None]

    async def _ensure_service(
        self, spec: ContainerSpec, info: ContainerInfo | None, rollout: bool
    ) -> _ServiceOutcome:
        outcome = _ServiceOutcome(spec.service)
        try:
            if info is not None and info.labels.get(naming.LABEL_CONFIG_HASH) != spec.config_hash:
                self._event(spec, EventKind.NORMAL, "Killing",
                            f"Stopping container {spec.name}: its configuration changed")
                await self.runtime.remove_container(
                    info.id, stop_timeout=self.settings.stop_timeout
                )
                outcome.acted.append("removed (configuration changed)")
                info = None
            if info is None:
                if not await self.runtime.image_present(spec.image):
                    self._event(spec, EventKind.NORMAL, "Pulling",
                                f'Pulling image "{spec.image}"')
                if await self.runtime.ensure_image(spec.image):
                    outcome.acted.append(f"pulled {spec.image}")
                    self._event(spec, EventKind.NORMAL, "Pulled",
                                f'Successfully pulled image "{spec.image}"')
                container_id = await self._create(spec, outcome)
                self._event(spec, EventKind.NORMAL, "Created", f"Created container {spec.name}")
                await self.runtime.start_container(container_id)
                outcome.acted.append("started")
                self._event(spec, EventKind.NORMAL, "Started", f"Started container {spec.name}")
            elif info.state == "created" or (rollout and info.state in ("exited", "dead")):
                await self.runtime.start_container(info.id)
                outcome.acted.append(f"started ({info.state})")
                self._event(spec, EventKind.NORMAL, "Started", f"Started container {spec.name}")
            elif info.state == "paused":
                pass  # someone paused it on purpose; reported as not running
        except RuntimeFailure as exc:
            outcome.failure = Failure(exc.reason, exc.message, spec.service)
            # ImagePullFailed, NameConflict, PortConflict, ContainerStartFailed, ...
            self._event(spec, EventKind.WARNING, exc.reason, exc.message)
        except ResourceBusy as exc:
            outcome.busy = exc
        return outcome

    async def _create(self, spec: ContainerSpec, outcome: _ServiceOutcome) -> str:
        try:
            container_id = await self.runtime.create_container(spec)
        except NameConflict:
            # The name is taken: ours from an interrupted run (replace it), another node's
            # copy of this project on a shared engine (wait for its sweep), or a container
            # nobody manages (report; never delete someone else's container).
            holder = await self.runtime.inspect_container(spec.name)
            if holder is not None:
                if holder.labels.get(naming.LABEL_PROJECT) != spec.project:
                    raise NameConflict(
                        naming.conflict_message(
                            "container", spec.name, holder.labels.get(naming.LABEL_PROJECT)
                        )
                    ) from None
                if not _is_ours(holder, spec.project, self.node):
                    raise ResourceBusy(
                        f'container "{spec.name}" still belongs to node '
                        f"{holder.labels.get(naming.LABEL_NODE)!r}; waiting for its removal"
                    ) from None
                await self.runtime.remove_container(
                    holder.id, stop_timeout=self.settings.stop_timeout
                )
            container_id = await self.runtime.create_container(spec)
        outcome.acted.append("created")
        return container_id

    async def _observed_containers(self, plan: ProjectPlan) -> dict[str, ContainerInfo | None]:
        """Each service's container as Docker reports it now.

        Inspected one by one, not listed: the list is served from a view that can lag the
        event stream (a ``die`` arrives while the list still says running), while an
        inspect waits for the container's own state.
        """

        async def one(spec: ContainerSpec) -> ContainerInfo | None:
            info = await self.runtime.inspect_container(spec.name)
            return info if _is_ours(info, plan.project, self.node) else None

        async with asyncio.TaskGroup() as tg:
            tasks = {spec.service: tg.create_task(one(spec)) for spec in plan.containers}
        return {service: task.result() for service, task in tasks.items()}

    async def _remove_undeclared_volumes(self, plan: ProjectPlan) -> None:
        declared = {v.name for v in plan.volumes}
        volumes = await self.runtime.list_volumes(
            {naming.LABEL_PROJECT: plan.project, naming.LABEL_NODE: self.node}
        )
        for volume in volumes:
            if volume.name not in declared:
                try:
                    await self.runtime.remove_volume(volume.name)
                except Exception as exc:  # still in use: the next pass retries
                    log.info("undeclared volume not removed yet", project=plan.project,
                             volume=volume.name, error=str(exc))

    # -- observe a Failed project -------------------------------------------------------------

    async def _observe_failed(self, project: Project) -> Result | None:
        name = project.metadata.name
        self.routes.remove_project(name)
        try:
            plan = plan_project(project, self.node, self.settings.policy)
        except SpecError:
            return None
        observed = await self._observed_containers(plan)
        obs = observe([c.service for c in plan.containers], observed)
        if obs.phase == ProjectPhase.RUNNING:
            log.info("containers of a failed project run again", project=name)
            return await self._report(project, [], observed)
        return None

    # -- report -------------------------------------------------------------------------------

    async def _report(
        self,
        project: Project,
        failures: list[Failure],
        observed: dict[str, ContainerInfo | None],
        context: ServiceContext | None = None,
    ) -> Result | None:
        name = project.metadata.name
        services = [s.name for s in project.spec.services]
        obs = observe(services, observed, failures, context)
        if obs.phase == ProjectPhase.RUNNING:
            # Traffic only to ready services: running, and healthy when health-checked.
            ready = {s.name for s in obs.services if s.ready}
            ips = {
                svc: ip
                for svc, info in observed.items()
                if info is not None and svc in ready and (ip := container_ip(info, name))
            }
            self.routes.set_project(
                name,
                routes_for(project, self.settings.environment, self.settings.base_domain),
                ips,
                unready={s.name: _not_ready_detail(s) for s in obs.services if not s.ready},
            )
        else:
            self.routes.remove_project(name)
        if not obs.settled and not obs.waiting:
            # Still starting (a container between create and start, paused, ...): no claim.
            return Result(requeue_after=STARTING_RECHECK)
        generation = project.metadata.generation

        def mutate(current: Project) -> ProjectStatus | None:
            if current.status.node_ref != self.node or current.status.phase not in (
                ProjectPhase.SCHEDULED, ProjectPhase.RUNNING, ProjectPhase.FAILED
            ):
                return None  # terminating, rescheduled, ...: not ours to overwrite
            if current.metadata.generation != generation:
                return None  # the spec moved on: the next reconcile handles it
            return apply_observation(current.status, obs, generation)

        written = await self._write_status(project, mutate)
        if written is not None and obs.phase is not None:
            cond = obs.condition
            log.info("status reported", project=name, phase=str(obs.phase),
                     reason=cond.reason, message=cond.message)
        return None

    async def _write_status(
        self, project: Project, mutate: Callable[[Project], ProjectStatus | None]
    ) -> Project | None:
        """PUT the status ``mutate`` derives; on 409 re-read and re-derive (or give up)."""
        current = project
        name = project.metadata.name
        for _ in range(STATUS_WRITE_ATTEMPTS):
            status = mutate(current)
            if status is None:
                return None
            body = current.model_copy(update={"status": status})
            try:
                return await self.client.projects.update_status(body)
            except Forbidden:
                # The node authorizer: the project is no longer bound to this node.
                return None
            except Conflict as exc:
                log.info("status write conflicted; re-reading", project=name, error=str(exc))
                try:
                    current = await self.client.projects.get(name)
                except (NotFound, Forbidden):  # gone, or moved to another node
                    return None
        raise Conflict(f'project "{name}": status kept changing under the agent')

    # -- terminate and sweep ------------------------------------------------------------------

    async def _terminate(self, project: Project) -> Result | None:
        name = project.metadata.name
        self.routes.remove_project(name)
        self.restarts.forget(project.metadata.uid or name)
        self._forget_reported(project.metadata.uid or name)
        removed = await self.teardown(name)
        if removed:
            log.info("project torn down", project=name, removed=removed)
            if self.recorder is not None:
                containers = sorted(r.split("/", 1)[1] for r in removed
                                    if r.startswith("container/"))
                if containers:
                    self.recorder.normal(
                        "Project", name, "Killing",
                        "Stopped and removed containers " + ", ".join(containers),
                        uid=project.metadata.uid,
                    )

        def mutate(current: Project) -> ProjectStatus | None:
            if current.status.phase != ProjectPhase.TERMINATING:
                return None
            if current.status.node_ref not in (None, self.node):
                return None
            return terminated_status(current.status)

        if await self._write_status(project, mutate) is not None:
            log.info("status reported", project=name, phase="Terminated")
        return None

    async def _reconcile_absent(self, key: str) -> Result | None:
        """The project is not (or no longer) assigned here: sweep what it left on this node."""
        self.routes.remove_project(key)
        if not await self.has_leftovers(key):
            return None
        try:
            current = await self.client.projects.get(key)
        except (NotFound, Forbidden):  # Forbidden: bound to another node
            current = None
        if (
            current is not None
            and current.status.node_ref == self.node
            and current.status.phase
            in (ProjectPhase.SCHEDULED, ProjectPhase.RUNNING, ProjectPhase.FAILED,
                ProjectPhase.TERMINATING)
        ):
            # Still ours on the server: the cache is behind, never sweep an assigned project.
            return Result(requeue_after=5.0)
        removed = await self.teardown(key)
        log.info("swept resources of a project not assigned to this node",
                 project=key, removed=removed,
                 reason="deleted" if current is None else f"on node {current.status.node_ref}")
        return None

    async def has_leftovers(self, key: str) -> bool:
        labels = {naming.LABEL_PROJECT: key, naming.LABEL_NODE: self.node}
        if await self.runtime.list_containers(labels):
            return True
        if await self.runtime.list_networks(labels):
            return True
        return bool(await self.runtime.list_volumes(labels))

    async def teardown(self, key: str) -> list[str]:
        """Remove every container, network and volume of ``key`` labelled for this node."""
        labels = {naming.LABEL_PROJECT: key, naming.LABEL_NODE: self.node}
        removed: list[str] = []
        containers = await self.runtime.list_containers(labels)
        await self._remove_containers(containers)
        removed += [f"container/{c.name}" for c in containers]
        for network in await self.runtime.list_networks(labels):
            await self.runtime.remove_network(network.name)
            removed.append(f"network/{network.name}")
        volumes = await self.runtime.list_volumes(labels)
        async with asyncio.TaskGroup() as tg:
            for volume in volumes:
                tg.create_task(self.runtime.remove_volume(volume.name))
        removed += [f"volume/{v.name}" for v in volumes]
        return removed

    async def _remove_containers(self, containers: Iterable[ContainerInfo]) -> None:
        async with asyncio.TaskGroup() as tg:
            for info in containers:
                tg.create_task(
                    self.runtime.remove_container(info.id, stop_timeout=self.settings.stop_timeout)
                )
