"""node-health: a node whose agent stopped heartbeating becomes NotReady.

Each node has one timer, set from its own heartbeat: ``lastHeartbeat + timeout - now``
(default timeout 90 s). When it fires and no newer heartbeat arrived, the node goes
NotReady with ``Ready=False/HeartbeatTimeout``. Every write of the node re-evaluates it and
re-arms its timer, so detection happens at the deadline, not up to a 30 s tick later as in
the original (REFERENCE §3.3). Heartbeats that change nothing renew the node lease instead
of writing the Node (``lastHeartbeat`` is then refreshed once a minute): a timer that finds
the node stale reads the lease (``GET /api/v1/nodes/{name}/heartbeat``) and waits on when it
is newer — one read per node that looks silent, none per heartbeat.

The ``Ready`` condition always agrees with the state: ``True/AgentReady`` when Ready,
``False`` when NotReady (``HeartbeatTimeout`` once the agent is silent). Recovery: the
agent's heartbeat carries ``state: Ready``, which the server applies itself (state and
condition together); a timestamp-only heartbeat on a node this controller marked NotReady
is recovered here. A node the *agent* reported NotReady (``AgentNotReady``) is left alone
while it keeps heartbeating: the agent knows better.

Draining (an admin's decision) is never changed by this controller, neither to Ready nor to
NotReady. Its ``Ready`` condition still reports the agent's health (False/HeartbeatTimeout
when silent, True/AgentReady again when heartbeats resume), and :func:`node_available`
counts a Draining node whose agent is silent as unavailable, so the rescheduler and the
termination controller do not strand projects on a drained, dead node.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from caravanserai.api.base import Condition, ConditionStatus, get_condition, set_condition
from caravanserai.api.node import CONDITION_READY, Node, NodeState, NodeStatus
from caravanserai.api.problems import Conflict, NotFound
from caravanserai.client.interface import Client
from caravanserai.informer import (
    Change,
    Clock,
    Controller,
    ControllerContext,
    Result,
    RunnableController,
    SharedInformer,
    predicate,
)
from caravanserai.informer.recorder import EventRecorder
from controllers.condition_clock import requeue_after
from controllers.settings import format_duration, load_settings

__all__ = [
    "REASON_AGENT_READY",
    "REASON_HEARTBEAT_TIMEOUT",
    "HealthDecision",
    "NodeHealth",
    "availability_changed",
    "controller",
    "describe_absence",
    "evaluate",
    "node_available",
]

NAME = "node-health"
REASON_HEARTBEAT_TIMEOUT = "HeartbeatTimeout"
REASON_AGENT_READY = "AgentReady"
MESSAGE_HEARTBEAT_TIMEOUT = "Agent has not posted a heartbeat within the timeout window"
MESSAGE_AGENT_READY = "Agent is healthy and posting heartbeats"
# Reasons the server writes (caravanserai.registry.lifecycle): a node registered and never
# heard from, and an agent that reported itself NotReady.
_REASON_REGISTERED = "NodeRegistered"
_REASON_AGENT_NOT_READY = "AgentNotReady"
# A NotReady node with one of these reasons comes back once it heartbeats again.
_RECOVERABLE = frozenset({REASON_HEARTBEAT_TIMEOUT, _REASON_REGISTERED})


def node_available(node: Node | None) -> bool:
    """Can the node's agent run (or tear down) projects?

    False for a missing node (REFERENCE §10.17), a NotReady node, and a Draining node whose
    Ready condition is False (drained *and* its agent gone). Shared by the rescheduler and
    the termination controller so that both mean the same by "the node is gone".
    """
    if node is None or node.status.state not in (NodeState.READY, NodeState.DRAINING):
        return False
    ready = get_condition(node.status.conditions, CONDITION_READY)
    return ready is None or ready.status is not ConditionStatus.FALSE


@predicate
def availability_changed(change: Change[Node]) -> bool:
    """A node appeared, went, or became (un)available to its projects (:func:`node_available`);
    heartbeats alone pass nothing. The node watch of the rescheduler and termination."""
    return (
        change.old is None
        or change.new is None
        or (node_available(change.old) != node_available(change.new))
    )


def describe_absence(node_name: str | None, node: Node | None) -> str:
    """Why the node cannot serve its projects, for messages."""
    if not node_name:
        return "the project has no node"
    if node is None:
        return f'node "{node_name}" does not exist'
    if node.status.state is NodeState.DRAINING:
        return f"node {node_name} is Draining and its agent stopped heartbeating"
    return f"node {node_name} is NotReady"


@dataclass(frozen=True, slots=True)
class HealthDecision:
    """What to do with one node: the status to write (None: none) and when to look again."""

    status: NodeStatus | None
    requeue_after: float | None


def _ready(status: ConditionStatus, reason: str, message: str) -> Condition:
    return Condition(type=CONDITION_READY, status=status, reason=reason, message=message)


def evaluate(
    status: NodeStatus, now: datetime, timeout: float, renewed: datetime | None = None
) -> HealthDecision:
    """Decide a node's state and Ready condition from its last heartbeat (pure).

    The last heartbeat is the newer of ``status.lastHeartbeat`` and ``renewed`` (the node
    lease, which heartbeats that change nothing renew instead of the Node).
    ``requeue_after`` is the time left until the heartbeat goes stale (None when it
    already is: the next heartbeat's update event wakes the node up again).
    """
    new = status.model_copy(deep=True)
    condition = get_condition(new.conditions, CONDITION_READY)
    beats = [t for t in (status.last_heartbeat, renewed) if t is not None]
    heartbeat = max(beats) if beats else None
    deadline = heartbeat + timedelta(seconds=timeout) if heartbeat is not None else None
    if deadline is not None and now < deadline:
        requeue_after: float | None = (deadline - now).total_seconds()
        healthy = _ready(ConditionStatus.TRUE, REASON_AGENT_READY, MESSAGE_AGENT_READY)
        if new.state is NodeState.READY:
            set_condition(new.conditions, healthy, now)
        elif new.state is NodeState.NOT_READY:
            if condition is None or condition.reason in _RECOVERABLE:
                new.state = NodeState.READY
                set_condition(new.conditions, healthy, now)
        elif new.state is NodeState.DRAINING and (
            condition is None or condition.reason == REASON_HEARTBEAT_TIMEOUT
        ):
            set_condition(new.conditions, healthy, now)
    else:
        requeue_after = None
        silent = _ready(ConditionStatus.FALSE, REASON_HEARTBEAT_TIMEOUT, MESSAGE_HEARTBEAT_TIMEOUT)
        if new.state is not NodeState.DRAINING:
            new.state = NodeState.NOT_READY
        never_heard = (
            heartbeat is None
            and condition is not None
            and condition.status is ConditionStatus.FALSE
            and condition.reason == _REASON_REGISTERED
        )
        # "Registered, waiting for the first heartbeat" says more than "timed out".
        if not never_heard:
            set_condition(new.conditions, silent, now)
    return HealthDecision(new if new != status else None, requeue_after)


class NodeHealth:
    """The reconciler: evaluate one node, write its status if it changed, re-arm its timer."""

    def __init__(
        self,
        client: Client,
        nodes: SharedInformer[Node],
        clock: Clock,
        timeout: float,
        log: Any,
        recorder: EventRecorder | None = None,
    ) -> None:
        self.client = client
        self.nodes = nodes
        self.clock = clock
        self.timeout = timeout
        self.log = log
        # NodeNotReady / NodeReady events (none without a recorder).
        self.recorder = recorder

    async def reconcile(self, name: str) -> Result | None:
        """Evaluate node ``name`` against the clock."""
        node = self.nodes.get(name)
        if node is None:
            return None
        now = self.clock.now()
        decision = evaluate(node.status, now, self.timeout)
        if decision.requeue_after is None:
            # Stale by the Node's own lastHeartbeat, which routine heartbeats leave alone
            # for up to a minute: the node lease has the last word (one read, made only
            # for a node that looks silent).
            try:
                renewed = await self.client.nodes.last_heartbeat(name)
            except NotFound:
                return None
            decision = evaluate(node.status, now, self.timeout, renewed)
        if decision.status is not None:
            updated = node.model_copy(update={"status": decision.status})
            try:
                # The resourceVersion in the body is a precondition: a heartbeat that landed
                # since our cache saw the node makes this a 409 and we look again.
                await self.client.nodes.update_status(updated)
            except Conflict:
                return Result(requeue=True)
            except NotFound:
                return None
            if decision.status.state != node.status.state:
                self.log.info(
                    "node.state_changed",
                    kind="Node",
                    name=name,
                    old=str(node.status.state),
                    new=str(decision.status.state),
                    last_heartbeat=str(node.status.last_heartbeat),
                )
                self._report(node, decision.status.state)
        return requeue_after(decision.requeue_after)

    def _report(self, node: Node, state: NodeState | None) -> None:
        if self.recorder is None:
            return
        name = node.metadata.name
        if state is NodeState.NOT_READY:
            self.recorder.warning(
                "Node", name, "NodeNotReady",
                f"Node {name} status is now: NotReady (no heartbeat for "
                f"{format_duration(self.timeout)})",
                uid=node.metadata.uid,
            )
        elif state is NodeState.READY:
            self.recorder.normal(
                "Node", name, "NodeReady", f"Node {name} status is now: Ready",
                uid=node.metadata.uid,
            )


def controller(ctx: ControllerContext) -> RunnableController:
    """Entry point ``node-health``: one timer per node from its heartbeat."""
    settings = load_settings(ctx.name, ctx.config)
    # Every change, heartbeats included: each one moves the node's deadline.
    return (
        Controller.for_(Node)
        .workers(settings.workers)
        .complete(
            lambda c: NodeHealth(
                c.client,
                c.informers.nodes(),
                c.clock,
                settings.heartbeat_timeout,
                c.log.bind(kind="Node"),
                EventRecorder(c.client, "node-health", clock=c.clock, log=c.log),
            )
        )
        .build(ctx)
    )
