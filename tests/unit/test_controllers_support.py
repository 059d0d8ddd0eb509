"""Helpers for the controllers' unit tests: object builders, a recording fake client and
informers whose cache the test fills directly (no server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from caravanserai.api.base import Condition, ConditionStatus, ObjectMeta
from caravanserai.api.binding import BindingOutcome, BindingResult
from caravanserai.api.node import CONDITION_READY, Node, NodeSpec, NodeState, NodeStatus
from caravanserai.api.problems import CaravanseraiError, Conflict, Invalid, NotFound
from caravanserai.api.project import Project, ProjectPhase, ProjectSpec, ProjectStatus, ServiceDef
from caravanserai.client.http import ObjectList
from caravanserai.client.watch import WatchEvent
from caravanserai.informer import SharedInformer

T = TypeVar("T", bound=Project | Node)


def project(
    name: str,
    phase: ProjectPhase = ProjectPhase.PENDING,
    node: str | None = None,
    *,
    rv: int = 1,
    conditions: list[Condition] | None = None,
    expire_at: datetime | None = None,
) -> Project:
    return Project(
        metadata=ObjectMeta(name=name, resource_version=str(rv)),
        spec=ProjectSpec(services=[ServiceDef(name="web", image="busybox")], expire_at=expire_at),
        status=ProjectStatus(phase=phase, node_ref=node, conditions=conditions or []),
    )


EPOCH = datetime(2025, 12, 31, tzinfo=UTC)
_MESSAGES = {
    "AgentReady": "Agent is healthy and posting heartbeats",
    "HeartbeatTimeout": "Agent has not posted a heartbeat within the timeout window",
}


def ready_condition(ok: bool, reason: str, when: datetime = EPOCH) -> Condition:
    """A Ready condition as its writers leave it (their messages, a transition time)."""
    return Condition(
        type=CONDITION_READY,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=_MESSAGES.get(reason, f"{reason} message"),
        last_transition_time=when,
    )


def clock_condition(condition_type: str, when: datetime) -> Condition:
    """A condition clock (NotReadyAt, TerminatingAt) started at ``when``."""
    return Condition(
        type=condition_type,
        status=ConditionStatus.TRUE,
        reason="NodeNotReady",
        message="m",
        last_transition_time=when,
    )


def node(
    name: str,
    state: NodeState = NodeState.READY,
    *,
    rv: int = 1,
    unschedulable: bool = False,
    heartbeat: datetime | None = None,
    conditions: list[Condition] | None = None,
) -> Node:
    if conditions is None:
        conditions = [
            ready_condition(True, "AgentReady")
            if state is NodeState.READY
            else ready_condition(False, "HeartbeatTimeout")
            if state is NodeState.NOT_READY
            else ready_condition(True, "AgentReady")
        ]
    return Node(
        metadata=ObjectMeta(name=name, resource_version=str(rv)),
        spec=NodeSpec(unschedulable=unschedulable),
        status=NodeStatus(state=state, last_heartbeat=heartbeat, conditions=conditions),
    )


@dataclass
class StaticLW(Generic[T]):
    """A ListerWatcher listing fixed items and then watching forever (nothing happens)."""

    model_type: type[T]
    items: list[T] = field(default_factory=list)

    @property
    def model(self) -> type[T]:
        return self.model_type

    @property
    def description(self) -> str:
        return f"static:{self.model_type.__name__}"

    async def list(self) -> ObjectList[T]:
        return ObjectList(list(self.items), "1")

    async def watch(
        self, resource_version: str, *, timeout_seconds: int | None = None
    ) -> AsyncIterator[WatchEvent[T]]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # pragma: no cover


def informer_of(model: type[T], *objs: T) -> SharedInformer[T]:
    """An informer whose cache holds ``objs`` (not running; tests upsert directly)."""
    informer: SharedInformer[T] = SharedInformer(StaticLW(model))
    for obj in objs:
        informer.cache.upsert(obj)
    return informer


@dataclass
class Call:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _FakeResource:
    def __init__(self, owner: FakeClient, kind: str) -> None:
        self._owner = owner
        self._kind = kind

    async def _record(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._owner.calls.append(Call(f"{self._kind}.{method}", args, kwargs))
        self._owner._called.set()
        await asyncio.sleep(0)
        error = self._owner.errors.pop(f"{self._kind}.{method}", None)
        if error is not None:
            raise error
        return None

    async def patch_status(
        self, name: str, phase: Any, reason: Any = None, message: Any = None, **kwargs: Any
    ) -> None:
        await self._record("patch_status", name, phase, reason, message, **kwargs)

    async def update_status(self, obj: Any) -> Any:
        await self._record("update_status", obj)
        return obj

    async def bind(self, bindings: Any) -> list[BindingResult]:
        """One recorded ``bind`` call per binding; ``errors["projects.bind"]`` (Conflict,
        NotFound, Invalid) becomes the outcome of the next one."""
        results = []
        for b in bindings:
            outcome = BindingOutcome.BOUND
            try:
                await self._record(
                    "bind", b.name, node_ref=b.node, resource_version=b.resource_version
                )
            except NotFound:
                outcome = BindingOutcome.NOT_FOUND
            except Conflict:
                outcome = BindingOutcome.CONFLICT
            except Invalid:
                outcome = BindingOutcome.INVALID
            results.append(BindingResult(name=b.name, node=b.node, outcome=outcome))
        return results

    async def delete(self, name: str, *, force: bool = False) -> Any:
        return await self._record("delete", name, force=force)

    async def last_heartbeat(self, name: str) -> Any:
        """A read (not recorded): the node lease set in ``FakeClient.leases``."""
        await asyncio.sleep(0)
        return self._owner.leases.get(name)


class FakeClient:
    """Records every write; ``errors["projects.patch_status"] = Conflict(...)`` makes the next
    such call raise."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._called = asyncio.Event()
        self.errors: dict[str, CaravanseraiError] = {}
        # Node leases (``nodes.last_heartbeat``): none unless a test sets one.
        self.leases: dict[str, datetime] = {}
        self.projects = _FakeResource(self, "projects")
        self.nodes = _FakeResource(self, "nodes")

    async def wait_calls(self, count: int) -> None:
        """Wait until at least ``count`` calls were made."""
        while len(self.calls) < count:
            self._called.clear()
            await self._called.wait()

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]


class NullLog:
    """A logger that swallows everything (the reconcilers only call its methods)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

    def bind(self, **kwargs: Any) -> NullLog:
        return self
