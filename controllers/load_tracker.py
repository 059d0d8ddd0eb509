"""LoadTracker: projects (and resource requests) per node, as the scheduler counts them.

Pure bookkeeping (no I/O): what the project informer shows plus what the scheduler has
decided and not yet seen come back (*assumed*, as kube-scheduler does), with a heap for the
least-loaded eligible node. See :mod:`controllers.scheduler` for why.
"""

from __future__ import annotations

import heapq

from caravanserai.api.requests import ZERO, Amount

__all__ = ["LoadTracker"]


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
