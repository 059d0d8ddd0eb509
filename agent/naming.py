"""Deterministic Docker names and labels (seed: "Docker resource naming").

Every object the agent creates carries the labels below, so the agent keeps no state of its
own: after a restart it finds what exists by label, and it sweeps what nobody owns.
"""

from __future__ import annotations

from caravanserai.api import ingress

LABEL_PROJECT = "cara.project"
LABEL_SERVICE = "cara.service"
LABEL_NODE = "cara.node"
# uid of the project incarnation that created the object: a project deleted and created again
# under the same name must not inherit the old containers or (Ephemeral) volume contents.
LABEL_UID = "cara.uid"
LABEL_CONFIG_HASH = "cara.config-hash"
LABEL_VOLUME = "cara.volume"


def network_name(project: str) -> str:
    return f"cara-{project}"


def container_name(project: str, service: str) -> str:
    return f"{project}-{service}"


def volume_name(project: str, volume: str) -> str:
    return f"cara-{project}-{volume}"


def conflict_message(kind: str, name: str, holder: str | None) -> str:
    """Why an object of this name cannot be used (its owner label is not the project)."""
    if holder is None:
        return f'{kind} "{name}" exists and is not managed by caravanserai; rename or remove it'
    return f'{kind} "{name}" belongs to project "{holder}"; its name collides with this one\'s'


def project_labels(project: str, node: str, uid: str | None) -> dict[str, str]:
    """Labels on every Docker object of a project (network, volumes, containers)."""
    labels = {LABEL_PROJECT: project, LABEL_NODE: node}
    if uid:
        labels[LABEL_UID] = uid
    return labels


def resolve_host(host: str, environment: str, base_domain: str) -> str:
    """The full hostname of an ingress rule (seed: ``spec.ingress[].host``).

    A host containing a dot is used verbatim; otherwise it becomes
    ``{host}.{environment}.{baseDomain}``. Hostnames are case-insensitive, a trailing dot
    (the DNS root) is dropped, so lookups compare the canonical lower-case form. The rule
    itself lives in :mod:`caravanserai.api.ingress`, shared with ``caractrl describe``.
    """
    return ingress.resolve_host(host, ingress.ingress_domain(environment, base_domain))


def host_from_header(value: str) -> str:
    """The hostname of an HTTP Host header: port stripped, IPv6 brackets kept, lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8081
        end = value.find("]")
        return value[: end + 1] if end != -1 else value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        value = host
    return value.rstrip(".")
