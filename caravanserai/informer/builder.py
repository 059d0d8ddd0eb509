"""The controller builder: wire a controller in a few lines, as controller-runtime's
``NewControllerManagedBy(mgr).For(...).Watches(...).WithEventFilter(...).Complete(r)``.

::

    async def sync_label(req: Request[Project]) -> Result | None:
        ...                                          # req.object: the cached project or None

    controller = (
        Controller.for_(Project)                     # reconcile keys = project names
        .watches(Node, map_to=projects_on_node)      # a node change → the projects it affects
        .with_filter(labels_changed | phase_changed) # which changes matter (all watches)
        .workers(4)
        .reconcile(sync_label)                       # a ControllerFactory: controller(ctx)
    )

A finished builder is a :data:`~caravanserai.informer.ControllerFactory`: publish it as an
entry point, hand it to :mod:`caravanserai.informer.run`, or call ``builder.build(ctx)``.
Informers come from ``ctx.informers`` and are therefore shared with every other controller
of the process that asks for the same kind and selection.

Every event is seen as a :class:`Change` carrying the old *and* the new object, so a
``map_to`` can enqueue both the node a project left and the node it moved to. Predicates
(:class:`Predicate`) combine with ``&``, ``|`` and ``~``.

A controller that keeps in-memory state from the events (the scheduler's load per node)
adds :meth:`ControllerBuilder.observe`; one that requeues a broad set on some events (every
Pending project when a node turns Ready) uses :func:`keys_in_index` with ``coalesce=True``::

    Controller.for_(Project, indexers={"phase": index_by_phase})
        .observe(Node, tracker.node_changed)          # before any enqueue of the same event
        .watches(Node, map_to=keys_in_index("phase", "Pending"),
                 predicate=became_ready, coalesce=True)   # once per loop turn, not per node

All of a controller's watches (and observers) of one informer share one handler: for each
event the observers run first, then every watch's predicates and ``map_to``, in the order
they were declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project
from caravanserai.client.http import ListOptions
from caravanserai.informer.cache import DeltaType, IndexFunc
from caravanserai.informer.controller import Controller, Reconciler, Result
from caravanserai.informer.informer import SharedInformer
from caravanserai.informer.manager_api import ControllerContext

__all__ = [
    "Change",
    "ControllerBuilder",
    "Predicate",
    "Request",
    "annotations_changed",
    "by_index",
    "generation_changed",
    "keys_in_index",
    "labels_changed",
    "phase_changed",
    "phase_in",
    "predicate",
]

T = TypeVar("T", bound=Project | Node | Event)
W = TypeVar("W", bound=Project | Node | Event)


@dataclass(frozen=True, slots=True)
class Change(Generic[W]):
    """One event of a watched informer, as predicates and ``map_to`` functions see it.

    Attributes:
        type: ``Added``, ``Updated``, ``Deleted`` or ``Sync`` (a periodic resync).
        old: the previous state (None on add).
        new: the current state (None on delete).
        primary: the controller's primary informer (to look up keys in its indexes).
    """

    type: DeltaType
    old: W | None
    new: W | None
    primary: SharedInformer[Any] | None = None

    @property
    def object(self) -> W:
        """The latest known state: ``new``, or ``old`` for a delete."""
        obj = self.new if self.new is not None else self.old
        assert obj is not None  # a Change always has one of them
        return obj

    @property
    def objects(self) -> list[W]:
        """``old`` and ``new``, those that exist (for mapping both sides of a move)."""
        return [o for o in (self.old, self.new) if o is not None]


class Predicate:
    """A filter on :class:`Change` events; combine with ``&``, ``|`` and ``~``.

    Like controller-runtime's predicates, the ``*_changed`` ones let adds and deletes pass
    and filter updates only.
    """

    def __init__(self, func: Callable[[Change[Any]], bool], name: str | None = None) -> None:
        self._func = func
        self.name = name or getattr(func, "__name__", "predicate")

    def __call__(self, change: Change[Any]) -> bool:
        return self._func(change)

    def __and__(self, other: Predicate) -> Predicate:
        return Predicate(lambda c: self(c) and other(c), f"({self.name} & {other.name})")

    def __or__(self, other: Predicate) -> Predicate:
        return Predicate(lambda c: self(c) or other(c), f"({self.name} | {other.name})")

    def __invert__(self) -> Predicate:
        return Predicate(lambda c: not self(c), f"~{self.name}")

    def __repr__(self) -> str:
        return f"Predicate({self.name})"


def predicate(func: Callable[[Change[Any]], bool]) -> Predicate:
    """Decorate a ``change -> bool`` function into a combinable :class:`Predicate`."""
    return Predicate(func)


def _updates_only(differs: Callable[[Any, Any], bool], name: str) -> Predicate:
    def check(change: Change[Any]) -> bool:
        if change.old is None or change.new is None:
            return True  # adds and deletes always pass
        return differs(change.old, change.new)

    return Predicate(check, name)


generation_changed = _updates_only(
    lambda o, n: o.metadata.generation != n.metadata.generation, "generation_changed"
)
"""Updates that changed the spec (``metadata.generation``); status-only writes are dropped."""

labels_changed = _updates_only(
    lambda o, n: o.metadata.labels != n.metadata.labels, "labels_changed"
)
"""Updates that changed ``metadata.labels``."""

annotations_changed = _updates_only(
    lambda o, n: o.metadata.annotations != n.metadata.annotations, "annotations_changed"
)
"""Updates that changed ``metadata.annotations``."""


def _phase(obj: Project | Node) -> str | None:
    status = obj.status
    value = getattr(status, "phase", None) or getattr(status, "state", None)
    return str(value) if value is not None else None


phase_changed = _updates_only(lambda o, n: _phase(o) != _phase(n), "phase_changed")
"""Updates that changed a project's phase or a node's state."""


def phase_in(*phases: str) -> Predicate:
    """Events whose object (the new state; the last one for a delete) is in one of
    ``phases`` (a project's ``status.phase`` or a node's ``status.state``)."""
    wanted = frozenset(str(p) for p in phases)
    return Predicate(lambda c: _phase(c.object) in wanted, f"phase_in({', '.join(sorted(wanted))})")


@dataclass(frozen=True)
class Request(Generic[T]):
    """What a reconcile function built with :meth:`ControllerBuilder.reconcile` receives.

    Attributes:
        name: the key: the name of the primary object.
        object: the primary object from the informer cache (read-only: copy before
            changing), or None when it does not exist (any more).
        ctx: the controller's context (``client``, ``clock``, ``config``, ``log``).
        informer: the primary kind's shared informer (``get``, ``list``, ``by_index``).
    """

    name: str
    object: T | None
    ctx: ControllerContext
    informer: SharedInformer[T]

    @property
    def client(self) -> Any:
        """The API client (``ctx.client``)."""
        return self.ctx.client

    @property
    def log(self) -> Any:
        """The controller's logger bound with the key (``name=...``)."""
        return self.ctx.log.bind(kind=self.informer.kind, name=self.name)


MapTo = Callable[[Change[Any]], Iterable[str]]


def by_index(index: str) -> MapTo:
    """A ``map_to``: the primary objects whose indexer ``index`` yields the watched object's
    name, e.g. ``.watches(Node, map_to=by_index("nodeRef"))`` → the projects on the node."""

    def keys(change: Change[Any]) -> list[str]:
        assert change.primary is not None
        return sorted(change.primary.cache.index_keys(index, change.object.metadata.name))

    return keys


def keys_in_index(index: str, value: str) -> MapTo:
    """A ``map_to`` that ignores which object changed: every primary key whose indexer
    ``index`` yields ``value``, e.g. ``keys_in_index("phase", "Pending")`` → every Pending
    project (with ``index_by_phase`` registered as ``"phase"`` on the primary). Pair it with
    ``coalesce=True`` so that a burst of events requeues the set once."""

    def keys(change: Change[Any]) -> list[str]:
        assert change.primary is not None
        return sorted(change.primary.cache.index_keys(index, value))

    return keys


Observer = Callable[[Change[Any]], None]

ReconcileFunc = Callable[[Request[Any]], Awaitable[Result | None]]
ReconcilerFactory = Callable[[ControllerContext], "Reconciler[str]"]


@dataclass(frozen=True)
class _Watch:
    model: type[Any]
    options: ListOptions | None
    indexers: Mapping[str, IndexFunc[Any]] | None
    map_to: MapTo | None
    predicates: tuple[Predicate, ...]
    coalesce: bool = False


@dataclass(frozen=True)
class _Observer:
    model: type[Any]
    options: ListOptions | None
    func: Observer


@dataclass(frozen=True)
class ControllerBuilder(Generic[T]):
    """An immutable description of a controller; each method returns a new builder.

    Start with :meth:`Controller.for_ <caravanserai.informer.Controller.for_>` (or
    ``ControllerBuilder.for_``). Once :meth:`reconcile` or :meth:`complete` gave it a
    reconciler it is a controller factory: ``builder(ctx) -> Controller``.
    """

    primary: _Watch
    watched: tuple[_Watch, ...] = ()
    observers: tuple[_Observer, ...] = ()
    filters: tuple[Predicate, ...] = ()
    name: str | None = None
    default_workers: int = 1
    reconcile_timeout: float | None = None
    _reconcile: ReconcileFunc | None = None
    _reconciler: ReconcilerFactory | None = None
    _extra: tuple[Callable[[Controller[str], ControllerContext], None], ...] = field(default=())

    @classmethod
    def for_(
        cls,
        model: type[T],
        options: ListOptions | None = None,
        *,
        indexers: Mapping[str, IndexFunc[T]] | None = None,
        predicate: Predicate | None = None,
    ) -> ControllerBuilder[T]:
        """Reconcile objects of ``model``: each add, update and delete enqueues its name.

        Args:
            options: the selection the informer caches (labels, fields, phase, nodeRef).
            indexers: indexers to add to the shared informer (see docs: indexer rules).
            predicate: a filter for this kind's events only.
        """
        preds = (predicate,) if predicate is not None else ()
        return cls(_Watch(model, options, indexers, None, preds))

    def watches(
        self,
        model: type[Project] | type[Node],
        map_to: MapTo,
        options: ListOptions | None = None,
        *,
        indexers: Mapping[str, IndexFunc[Any]] | None = None,
        predicate: Predicate | None = None,
        coalesce: bool = False,
    ) -> ControllerBuilder[T]:
        """Also react to ``model``: ``map_to(change)`` returns the primary names to enqueue.

        ``change.old`` and ``change.new`` are both given, so a move (a project from node
        A to B) can enqueue both sides: ``lambda c: {p.status.node_ref for p in c.objects}``.

        Args:
            coalesce: call ``map_to`` once per event-loop turn, with the last of the events
                that passed the filters since the previous call, instead of once per event.
                For a ``map_to`` whose keys do not depend on which object changed (a
                broadcast such as :func:`keys_in_index`): a hundred nodes turning Ready at
                once requeue the Pending projects once, not a hundred times.
        """
        preds = (predicate,) if predicate is not None else ()
        watch = _Watch(model, options, indexers, map_to, preds, coalesce)
        return replace(self, watched=(*self.watched, watch))

    def observe(
        self,
        model: type[Project] | type[Node],
        func: Observer,
        options: ListOptions | None = None,
    ) -> ControllerBuilder[T]:
        """Call ``func(change)`` for every event of ``model`` (with this selection), before
        any filter and before the controller enqueues anything for the same event.

        For in-memory state the reconciler reads, kept current from the events (the
        scheduler's load per node, counted from where projects are): because it runs in the
        same handler as the controller's ``map_to`` functions, a key enqueued for an event
        is reconciled with the state that already counts that event, and the controller
        starts its workers only once every observer has seen the initial list. ``func``
        must be quick and must not block or do I/O (it runs in the informer's handler);
        it is not retried.
        """
        return replace(self, observers=(*self.observers, _Observer(model, options, func)))

    def with_filter(self, predicate: Predicate) -> ControllerBuilder[T]:
        """Drop events of every watch (primary and ``watches``) that ``predicate`` rejects."""
        return replace(self, filters=(*self.filters, predicate))

    def workers(self, count: int) -> ControllerBuilder[T]:
        """Concurrent reconciles (default 1). ``ctx.config["workers"]`` overrides it, which
        is how the manager's settings and ``run --workers`` reach a built controller."""
        if count < 1:
            raise ValueError("workers must be >= 1")
        return replace(self, default_workers=count)

    def named(self, name: str) -> ControllerBuilder[T]:
        """The controller's name (metrics, logs); default: the context's name."""
        return replace(self, name=name)

    def timeout(self, seconds: float) -> ControllerBuilder[T]:
        """Cancel and retry a reconcile running longer than ``seconds``."""
        return replace(self, reconcile_timeout=seconds)

    def setup(
        self, func: Callable[[Controller[str], ControllerContext], None]
    ) -> ControllerBuilder[T]:
        """Run ``func(controller, ctx)`` after the wiring (an escape hatch: extra watches)."""
        return replace(self, _extra=(*self._extra, func))

    def reconcile(self, func: ReconcileFunc) -> ControllerBuilder[T]:
        """Reconcile each key with ``async func(request) -> Result | None``."""
        return replace(self, _reconcile=func, _reconciler=None)

    def complete(self, factory: ReconcilerFactory) -> ControllerBuilder[T]:
        """Reconcile with an object made by ``factory(ctx)`` with ``async reconcile(name)``
        (for reconcilers that keep state or are tested on their own)."""
        return replace(self, _reconciler=factory, _reconcile=None)

    # -- building ---------------------------------------------------------------------------

    def __call__(self, ctx: ControllerContext) -> Controller[str]:
        return self.build(ctx)

    def informer(self, ctx: ControllerContext) -> SharedInformer[T]:
        """The primary kind's shared informer in ``ctx`` (with the builder's indexers)."""
        p = self.primary
        informer: SharedInformer[T] = ctx.informers.informer(
            p.model, p.options, indexers=p.indexers
        )
        return informer

    def build(self, ctx: ControllerContext) -> Controller[str]:
        """Make the :class:`Controller`: informers from ``ctx.informers``, handlers wired."""
        if self._reconcile is None and self._reconciler is None:
            raise TypeError("the builder has no reconciler: call .reconcile(fn) or .complete()")
        primary = self.informer(ctx)
        reconciler: Reconciler[str] | Callable[[str], Awaitable[Result | None]]
        if self._reconciler is not None:
            reconciler = self._reconciler(ctx)
        else:
            func = self._reconcile
            assert func is not None

            async def reconcile(name: str) -> Result | None:
                return await func(Request(name, primary.get(name), ctx, primary))

            reconciler = reconcile
        workers = int(ctx.config.get("workers", self.default_workers))
        ctrl: Controller[str] = Controller(
            self.name or ctx.name,
            reconciler,
            workers=workers,
            clock=ctx.clock,
            reconcile_timeout=self.reconcile_timeout,
            kind=primary.kind,
        )
        # One handler per informer: its observers, then its routes, in declaration order.
        groups: dict[int, tuple[SharedInformer[Any], list[Observer], list[_Route]]] = {}

        def group(informer: SharedInformer[Any]) -> tuple[list[Observer], list[_Route]]:
            entry = groups.setdefault(id(informer), (informer, [], []))
            return entry[1], entry[2]

        group(primary)[1].append(
            _Route(ctrl, None, (*self.filters, *self.primary.predicates), False)
        )
        for w in self.watched:
            informer = ctx.informers.informer(w.model, w.options, indexers=w.indexers)
            group(informer)[1].append(
                _Route(ctrl, w.map_to, (*self.filters, *w.predicates), w.coalesce)
            )
        for o in self.observers:
            group(ctx.informers.informer(o.model, o.options))[0].append(o.func)
        for informer, observers, routes in groups.values():
            _wire(ctrl, informer, primary, observers, routes)
        for extra in self._extra:
            extra(ctrl, ctx)
        return ctrl


class _Route:
    """One watch of a built controller: its filters and its mapping to keys."""

    def __init__(
        self,
        ctrl: Controller[str],
        map_to: MapTo | None,
        predicates: tuple[Predicate, ...],
        coalesce: bool,
    ) -> None:
        self.ctrl = ctrl
        self.map_to = map_to
        self.predicates = predicates
        self.coalesce = coalesce
        self._pending: Change[Any] | None = None

    def __call__(self, change: Change[Any]) -> None:
        for p in self.predicates:
            if not p(change):
                return
        if not self.coalesce:
            self._enqueue(change)
            return
        # The first event of a burst schedules one call for the next loop turn; the others
        # only replace the change it will be given.
        if self._pending is None:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending = change

    def _flush(self) -> None:
        change, self._pending = self._pending, None
        if change is not None:
            self._enqueue(change)

    def _enqueue(self, change: Change[Any]) -> None:
        keys = [change.object.metadata.name] if self.map_to is None else self.map_to(change)
        queue = self.ctrl.queue
        for key in keys:
            if key:
                queue.add(key)


def _wire(
    ctrl: Controller[str],
    informer: SharedInformer[Any],
    primary: SharedInformer[Any],
    observers: list[Observer],
    routes: list[_Route],
) -> None:
    def handle(change: Change[Any]) -> None:
        for observe in observers:
            observe(change)
        for route in routes:
            route(change)

    registration = informer.add_handler(
        on_add=lambda obj: handle(Change(DeltaType.ADDED, None, obj, primary)),
        on_update=lambda old, new: handle(
            Change(DeltaType.SYNC if old is new else DeltaType.UPDATED, old, new, primary)
        ),
        on_delete=lambda obj: handle(Change(DeltaType.DELETED, obj, None, primary)),
        name=f"{ctrl.name}/{informer.kind}",
    )
    ctrl.wait_for(informer)
    ctrl.wait_for_handler(registration)
