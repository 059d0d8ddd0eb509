"""The status rules the server enforces on every write: pure functions over the api models.

Kept apart from the HTTP handlers so they are unit-testable and so every writer (PATCH, PUT
/status, delete, spec update) goes through the same phase machine, history and condition
bookkeeping. All of them run inside the store's atomic ``update`` mutator: the check and the
write see the same state, so no concurrent write can slip in between (REFERENCE §10.9).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from caravanserai.api.base import Condition, ConditionStatus, remove_condition, set_condition
from caravanserai.api.node import CONDITION_READY, Heartbeat, NodeState, NodeStatus
from caravanserai.api.phases import NODE_BOUND_PHASES, check_transition
from caravanserai.api.problems import Conflict
from caravanserai.api.project import (
    CONDITION_NOT_READY_AT,
    CONDITION_PHASE,
    CONDITION_SCHEDULED,
    CONDITION_TERMINATING_AT,
    PhaseTransition,
    ProjectPhase,
    ProjectStatus,
)

HISTORY_LIMIT = 10
"""How many phase transitions ``status.history`` keeps (newest last)."""

# Reasons the server itself writes.
REASON_CREATED = "Created"
REASON_SPEC_UPDATED = "SpecUpdated"
REASON_DELETION_REQUESTED = "DeletionRequested"
REASON_NODE_REGISTERED = "NodeRegistered"
REASON_AGENT_READY = "AgentReady"
REASON_AGENT_NOT_READY = "AgentNotReady"

# Phases that need a node, and so a nodeRef.
NODE_PHASES = NODE_BOUND_PHASES

# How stale a Ready node's status.lastHeartbeat may grow while its heartbeats change nothing
# (they renew the node lease only). Kubernetes' kubelet reports an unchanged status every
# 5 minutes; a minute keeps the field (shown by the dashboard and `get nodes`) telling, and
# still takes a 10-second heartbeat's Node writes down sixfold.
NODE_STATUS_REFRESH = timedelta(seconds=60)


def initial_project_status(now: datetime) -> ProjectStatus:
    """What every new project starts with: Pending, a Phase condition and one history entry.

    Client-supplied status is ignored on create (REFERENCE §10.18: the original let a client
    create a project already Running on a node).
    """
    message = "Project accepted; waiting to be scheduled on a node"
    return ProjectStatus(
        phase=ProjectPhase.PENDING,
        conditions=[
            Condition(
                type=CONDITION_PHASE,
                status=ConditionStatus.TRUE,
                reason=REASON_CREATED,
                message=message,
                last_transition_time=now,
            )
        ],
        history=[
            PhaseTransition(
                phase=ProjectPhase.PENDING, reason=REASON_CREATED, message=message, time=now
            )
        ],
    )


def initial_node_status(now: datetime) -> NodeStatus:
    """A new node is NotReady, with a Ready=False condition saying why, until it heartbeats.

    The original left a new node without any Ready condition (REFERENCE §10.11).
    """
    return NodeStatus(
        state=NodeState.NOT_READY,
        conditions=[
            Condition(
                type=CONDITION_READY,
                status=ConditionStatus.FALSE,
                reason=REASON_NODE_REGISTERED,
                message="Node registered; waiting for the agent's first heartbeat",
                last_transition_time=now,
            )
        ],
    )


def _record(
    status: ProjectStatus,
    old: ProjectPhase | None,
    reason: str | None,
    message: str | None,
    now: datetime,
) -> None:
    """Append the history entry and move the Phase condition for a phase change."""
    assert status.phase is not None
    message = message or f"Phase changed from {old or 'none'} to {status.phase}"
    status.history.append(
        PhaseTransition(phase=status.phase, reason=reason, message=message, time=now)
    )
    del status.history[:-HISTORY_LIMIT]
    # The Phase condition is always True; its lastTransitionTime marks the phase change.
    set_condition(
        status.conditions,
        Condition(
            type=CONDITION_PHASE,
            status=ConditionStatus.TRUE,
            reason=reason,
            message=message,
            last_transition_time=now,
        ),
        now,
    )


def _enter(status: ProjectStatus, phase: ProjectPhase) -> None:
    """Invariants of entering a phase."""
    if phase is ProjectPhase.PENDING:
        # A Pending project is by definition on no node, and the rescheduler's clocks of a
        # previous node must not carry over to the next one (REFERENCE §10.10).
        status.node_ref = None
        remove_condition(status.conditions, CONDITION_NOT_READY_AT)
        remove_condition(status.conditions, CONDITION_TERMINATING_AT)
    if phase is ProjectPhase.SCHEDULED:
        # The scheduler's "why not" (Scheduled=False, Unschedulable) is answered now.
        remove_condition(status.conditions, CONDITION_SCHEDULED)


def set_phase(
    status: ProjectStatus,
    name: str,
    phase: ProjectPhase,
    *,
    reason: str | None,
    message: str | None,
    now: datetime,
    node_ref: str | None = None,
) -> bool:
    """Apply a phase write (``PATCH /status``) in place; True when anything changed.

    Raises Conflict for an edge the phase machine does not allow and Invalid for a
    Scheduled/Running project without a node.
    """
    old = status.phase
    check_transition(name, old, phase)
    # Track changes as they are made: a deep copy to compare with would cost more than the
    # whole write (the scheduler's batches make thousands of these a second).
    changed = False
    if node_ref is not None and node_ref != status.node_ref:
        status.node_ref = node_ref
        changed = True
    if phase != old:
        status.phase = phase
        _enter(status, phase)
        _record(status, old, reason, message, now)
        changed = True
    elif reason is not None or message is not None:
        # Same phase, new explanation (e.g. Failed with a better message): the condition
        # changes, its lastTransitionTime stays, the history does not grow.
        current = next((c for c in status.conditions if c.type == CONDITION_PHASE), None)
        changed = set_condition(
            status.conditions,
            Condition(
                type=CONDITION_PHASE,
                status=ConditionStatus.TRUE,
                reason=reason if reason is not None else (current.reason if current else None),
                message=message if message is not None else (current.message if current else None),
            ),
            now,
        ) or changed
    if status.phase in NODE_PHASES and not status.node_ref:
        # Whether nodeRef must be sent depends on the stored status (a project already on a
        # node keeps it): a conflict with the current state, as a forbidden transition.
        raise Conflict(
            f'project "{name}" cannot be {status.phase} without a node: nodeRef is required'
        )
    return changed


def replace_status(
    old: ProjectStatus, new: ProjectStatus, name: str, now: datetime
) -> ProjectStatus:
    """The status a ``PUT /status`` stores: the client's, under the server's rules.

    The phase machine is enforced; ``history`` is server-kept (the client's is ignored, an
    entry is appended when the phase changes); on a phase change the Phase condition's
    lastTransitionTime becomes now (its reason/message are the client's when it sent one).
    """
    if new.phase is not None:
        check_transition(name, old.phase, new.phase)
    result = new.model_copy(deep=True)
    result.history = [h.model_copy() for h in old.history]
    if new.phase is None:
        # A status without a phase would orphan the project from every controller.
        result.phase = old.phase
    if result.phase != old.phase and result.phase is not None:
        _enter(result, result.phase)
        sent = next((c for c in new.conditions if c.type == CONDITION_PHASE), None)
        kept = next((c for c in old.conditions if c.type == CONDITION_PHASE), None)
        fresh = sent is not None and sent != kept
        _record(
            result,
            old.phase,
            sent.reason if fresh and sent else None,
            sent.message if fresh and sent else None,
            now,
        )
    if result.phase in NODE_PHASES and not result.node_ref:
        raise Conflict(
            f'project "{name}" cannot be {result.phase} without a node: '
            "status.nodeRef is required"
        )
    return result


def redeploy_after_spec_change(status: ProjectStatus, name: str, now: datetime) -> bool:
    """A spec change on a Failed project deploys it again (REFERENCE §10.8: the original kept
    it Failed forever). Back to Scheduled on its node if it has one, else Pending."""
    if status.phase is not ProjectPhase.FAILED:
        return False
    target = ProjectPhase.SCHEDULED if status.node_ref else ProjectPhase.PENDING
    where = f" on node {status.node_ref}" if status.node_ref else ""
    return set_phase(
        status,
        name,
        target,
        reason=REASON_SPEC_UPDATED,
        message=f"Spec changed; redeploying{where}",
        now=now,
    )


def begin_termination(status: ProjectStatus, name: str, now: datetime) -> bool:
    """Phase Terminating for a graceful delete: the node's agent tears the project down."""
    if status.phase is ProjectPhase.TERMINATING:
        return False
    return set_phase(
        status,
        name,
        ProjectPhase.TERMINATING,
        reason=REASON_DELETION_REQUESTED,
        message=f"Deletion requested; waiting for node {status.node_ref} to remove the containers",
        now=now,
    )


def ready_condition_for(state: NodeState, *, from_heartbeat: bool) -> Condition | None:
    """The Ready condition that agrees with a node state (None for Draining: it says nothing
    about the agent's health, which the condition reports)."""
    if state is NodeState.READY:
        return Condition(
            type=CONDITION_READY,
            status=ConditionStatus.TRUE,
            reason=REASON_AGENT_READY,
            message="Agent is healthy and posting heartbeats",
        )
    if state is NodeState.NOT_READY:
        return Condition(
            type=CONDITION_READY,
            status=ConditionStatus.FALSE,
            reason=REASON_AGENT_NOT_READY,
            message="Agent reported NotReady" if from_heartbeat else "Node is NotReady",
        )
    return None


def apply_heartbeat(status: NodeStatus, hb: Heartbeat, now: datetime) -> None:
    """Merge a heartbeat into the node status in place.

    * ``lastHeartbeat`` = the server's clock (agents' clocks may be off);
    * network and info are merged field by field, capacity/allocatable replaced when sent;
    * ``state``: Ready/NotReady from the agent are applied, except that an admin's
      ``Draining`` is kept: **Draining is cleared only by an explicit status PUT**. The
      agent may itself announce Draining.
    * the Ready condition follows the reported health (True for Ready, False for NotReady),
      also while Draining, so state and condition never disagree (REFERENCE §10.11);
    * conditions other than Ready are never touched (node-health's, pressure, ...).
    """
    status.last_heartbeat = now
    if hb.network is not None:
        for field in type(hb.network).model_fields:
            value = getattr(hb.network, field)
            if value is not None:
                setattr(status.network, field, value)
    if hb.info is not None:
        for field in type(hb.info).model_fields:
            value = getattr(hb.info, field)
            if value is not None:
                setattr(status.info, field, value)
    if hb.capacity is not None:
        status.capacity = dict(hb.capacity)
    if hb.allocatable is not None:
        status.allocatable = dict(hb.allocatable)
    if hb.state is None:
        return  # a timestamp-only heartbeat: node-health decides about the state
    if status.state is not NodeState.DRAINING or hb.state is NodeState.DRAINING:
        status.state = hb.state
    condition = ready_condition_for(hb.state, from_heartbeat=True)
    if condition is not None:
        set_condition(status.conditions, condition, now)


def heartbeat_is_routine(
    status: NodeStatus, hb: Heartbeat, now: datetime, refresh: timedelta | None = None
) -> bool:
    """Would the heartbeat change nothing of a Ready node but a fresh ``lastHeartbeat``?

    Then renewing the node lease records it (see ``NodeRegistry.heartbeat``). Never for a
    node that is not Ready: node-health brings a silent node back when it sees the write.
    """
    last = status.last_heartbeat
    refresh = NODE_STATUS_REFRESH if refresh is None else refresh
    if status.state is not NodeState.READY or last is None or now - last >= refresh:
        return False
    merged = status.model_copy(deep=True)
    apply_heartbeat(merged, hb, now)
    merged.last_heartbeat = last
    return merged == status


def sync_ready_condition(status: NodeStatus, now: datetime) -> None:
    """After a node status PUT: if the Ready condition contradicts the state, fix it.

    A writer that sets the condition consistently (node-health) keeps its own reason.
    """
    if status.state is None:
        return
    wanted = ready_condition_for(status.state, from_heartbeat=False)
    if wanted is None:
        return
    current = next((c for c in status.conditions if c.type == CONDITION_READY), None)
    if current is None or current.status != wanted.status:
        set_condition(status.conditions, wanted, now)
