"""Resource types, validation, phase rules, selectors and problem details.

This package imports nothing else of ours: every other layer builds on it.
"""

from caravanserai.api.base import (
    API_VERSION,
    Condition,
    ConditionStatus,
    ListMeta,
    ObjectMeta,
    Timestamp,
    WireModel,
    get_condition,
    remove_condition,
    set_condition,
    utcnow,
)
from caravanserai.api.node import (
    CONDITION_READY,
    Heartbeat,
    Node,
    NodeInfo,
    NodeList,
    NodeNetwork,
    NodeSpec,
    NodeState,
    NodeStatus,
)
from caravanserai.api.problems import (
    AlreadyExists,
    BadRequest,
    CaravanseraiError,
    Conflict,
    Expired,
    FieldError,
    Invalid,
    NotFound,
    Problem,
)
from caravanserai.api.project import (
    CONDITION_CONTAINERS_RUNNING,
    CONDITION_NOT_READY_AT,
    CONDITION_PHASE,
    CONDITION_TERMINATING_AT,
    EnvVar,
    IngressAccess,
    IngressDef,
    IngressTarget,
    PhaseTransition,
    PortMapping,
    Project,
    ProjectList,
    ProjectPhase,
    ProjectSpec,
    ProjectStatus,
    ServiceDef,
    ServiceStatus,
    VolumeDef,
    VolumeMount,
)
from caravanserai.api.resources import KINDS, NODES, PROJECTS, Resource, ResourceKind
from caravanserai.api.selectors import Selector
from caravanserai.api.watch import EventType, WatchEvent

__all__ = [
    "API_VERSION", "CONDITION_CONTAINERS_RUNNING", "CONDITION_NOT_READY_AT", "CONDITION_PHASE",
    "CONDITION_READY", "CONDITION_TERMINATING_AT", "KINDS", "NODES", "PROJECTS",
    "AlreadyExists", "BadRequest", "CaravanseraiError", "Condition", "ConditionStatus",
    "Conflict", "EnvVar", "EventType", "Expired", "FieldError", "Heartbeat", "IngressAccess",
    "IngressDef", "IngressTarget", "Invalid", "ListMeta", "Node", "NodeInfo", "NodeList",
    "NodeNetwork", "NodeSpec", "NodeState", "NodeStatus", "NotFound", "ObjectMeta",
    "PhaseTransition", "PortMapping", "Problem", "Project", "ProjectList", "ProjectPhase",
    "ProjectSpec", "ProjectStatus", "Resource", "ResourceKind", "Selector", "ServiceDef",
    "ServiceStatus", "Timestamp", "VolumeDef", "VolumeMount", "WatchEvent", "WireModel",
    "get_condition", "remove_condition", "set_condition", "utcnow",
]
