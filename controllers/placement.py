"""Resource-aware placement: which nodes a project's requests fit on, and why not (pure).

The amounts come from ``caravanserai.api.requests``. The scheduler keeps the nodes where the
request fits in what is left after the requests of the projects already there, then spreads
among them as it does without requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from caravanserai.api.node import Node, NodeState
from caravanserai.api.requests import Amount, Capacity, node_allocatable

REASON_UNSCHEDULABLE = "Unschedulable"


def misfit(request: Amount, capacity: Capacity, allocated: Amount) -> list[str]:
    """Why ``request`` does not fit on a node (empty: it fits)."""
    reasons = []
    if request.cpus > 0 and capacity.cpus is not None and (
        allocated.cpus + request.cpus > capacity.cpus + 1e-9
    ):
        reasons.append("insufficient cpu")
    if request.memory > 0 and capacity.memory is not None and (
        allocated.memory + request.memory > capacity.memory
    ):
        reasons.append("insufficient memory")
    return reasons


def ineligibility(node: Node | None) -> str | None:
    """Why a node cannot take any project (None: it can)."""
    if node is None:
        return "gone"
    if node.spec.unschedulable:
        return "cordoned"
    if node.status.state is NodeState.DRAINING:
        return "draining"
    if node.status.state is not NodeState.READY:
        return "not ready"
    return None


@dataclass(frozen=True)
class Candidate:
    name: str
    node: Node | None
    load: int
    allocated: Amount


def place(request: Amount, candidates: Iterable[Candidate]) -> tuple[str | None, str]:
    """The least-loaded node the request fits on (ties: smallest name) and, when there is
    none, the message that counts why: ``0/3 nodes fit: 2 insufficient memory, 1 cordoned``.
    """
    best: tuple[int, str] | None = None
    why: Counter[str] = Counter()
    total = 0
    for c in candidates:
        total += 1
        reason = ineligibility(c.node)
        if reason is None:
            assert c.node is not None
            reasons = misfit(request, node_allocatable(c.node), c.allocated)
            if reasons:
                why.update(reasons)
                continue
            key = (c.load, c.name)
            if best is None or key < best:
                best = key
            continue
        why[reason] += 1
    if best is not None:
        return best[1], f"fits on {best[1]}"
    if total == 0:
        return None, "0/0 nodes fit: no nodes registered"
    detail = ", ".join(f"{n} {r}" for r, n in sorted(why.items(), key=lambda kv: (-kv[1], kv[0])))
    return None, f"0/{total} nodes fit" + (f": {detail}" if detail else "")
