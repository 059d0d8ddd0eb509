"""The effective hostname of an ingress rule: one rule for the agent that routes it and for
``caractrl describe`` that shows it (seed: ``spec.ingress[].host``).

A host containing a dot is used verbatim; a short one (``news``) is completed with the
node's ingress domain, ``{environment}.{baseDomain}`` of its agent (``dev.cara.local`` by
default), which the agent reports in ``status.network.ingressDomain``.
"""

from __future__ import annotations

DEFAULT_ENVIRONMENT = "dev"
DEFAULT_BASE_DOMAIN = "cara.local"


def ingress_domain(environment: str, base_domain: str) -> str:
    """``dev`` + ``cara.local`` -> ``dev.cara.local`` (empty parts are left out)."""
    parts = [p for p in (environment.strip("."), base_domain.strip(".")) if p]
    return ".".join(parts).lower()


def resolve_host(host: str, domain: str) -> str:
    """The full, canonical (lower-case, no trailing dot) hostname of an ingress rule."""
    host = host.strip().rstrip(".").lower()
    if "." in host:
        return host
    domain = domain.strip(".").lower()
    return f"{host}.{domain}" if domain and host else host or domain
