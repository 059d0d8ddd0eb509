"""The informer library: list/watch, caches with indexers, work queues and controllers.

The anchor is client-go's ``tools/cache`` and ``util/workqueue`` and controller-runtime's
Reconciler. See ``docs/controllers.md`` for a guide.

- :class:`ListerWatcher` (:class:`ClientListerWatcher`, over the HTTP or the in-process client)
- :class:`Reflector` keeps a :class:`Cache` current (resume, relist on 410, backoff, liveness)
- :class:`SharedInformer`: one reflector + cache, many handlers, indexers, resync
- :class:`ControllerBuilder` (``Controller.for_(Project)...``), :class:`Predicate`
- :class:`WorkQueue` with rate limiters; :class:`Controller` runs a :class:`Reconciler`
- :class:`LeaderElector` on a Lease object, over any client (HTTP or in-process)
- :class:`ControllerContext` / :class:`InformerFactory`: the controller plug-in contract
- :class:`Clock` / :class:`FakeClock`: injectable time
"""

from caravanserai.client.http import ListOptions
from caravanserai.client.watch import WatchEvent
from caravanserai.informer.backoff import Backoff
from caravanserai.informer.builder import (
    Change,
    ControllerBuilder,
    Predicate,
    Request,
    annotations_changed,
    by_index,
    generation_changed,
    keys_in_index,
    labels_changed,
    phase_changed,
    phase_in,
    predicate,
)
from caravanserai.informer.cache import (
    Cache,
    Delta,
    DeltaType,
    Indexer,
    IndexFunc,
    index_by_label,
    index_by_node_ref,
    index_by_phase,
    index_by_state,
)
from caravanserai.informer.clock import Clock, FakeClock, RealClock, TimerHandle
from caravanserai.informer.controller import Controller, Reconciler, Result
from caravanserai.informer.informer import HandlerRegistration, SharedInformer
from caravanserai.informer.leader import LeaderElector
from caravanserai.informer.listerwatcher import (
    ClientListerWatcher,
    HTTPListerWatcher,
    ListerWatcher,
)
from caravanserai.informer.manager_api import (
    ENTRY_POINT_GROUP,
    ControllerContext,
    ControllerFactory,
    InformerFactory,
    RunnableController,
    run_controllers,
)
from caravanserai.informer.ratelimit import (
    BucketRateLimiter,
    ItemExponentialRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    default_controller_rate_limiter,
)
from caravanserai.informer.reflector import Reflector, StreamStalled
from caravanserai.informer.workqueue import ShutDown, WorkQueue

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backoff",
    "BucketRateLimiter",
    "Cache",
    "Change",
    "ClientListerWatcher",
    "Clock",
    "Controller",
    "ControllerBuilder",
    "ControllerContext",
    "ControllerFactory",
    "Delta",
    "DeltaType",
    "FakeClock",
    "HTTPListerWatcher",
    "HandlerRegistration",
    "IndexFunc",
    "Indexer",
    "InformerFactory",
    "ItemExponentialRateLimiter",
    "LeaderElector",
    "ListOptions",
    "ListerWatcher",
    "MaxOfRateLimiter",
    "Predicate",
    "RateLimiter",
    "RealClock",
    "Reconciler",
    "Reflector",
    "Request",
    "Result",
    "RunnableController",
    "SharedInformer",
    "ShutDown",
    "StreamStalled",
    "TimerHandle",
    "WatchEvent",
    "WorkQueue",
    "annotations_changed",
    "by_index",
    "default_controller_rate_limiter",
    "generation_changed",
    "index_by_label",
    "index_by_node_ref",
    "index_by_phase",
    "index_by_state",
    "keys_in_index",
    "labels_changed",
    "phase_changed",
    "phase_in",
    "predicate",
    "run_controllers",
]
