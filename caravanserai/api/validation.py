"""Validation of manifests: every violation, each with its field path.

(Stub: being filled in. Public functions and signatures are fixed.)
"""

from __future__ import annotations

from typing import Any

from caravanserai.api.node import Node
from caravanserai.api.problems import FieldError
from caravanserai.api.project import Project


def parse_resource(data: Any, *, kind: str | None = None) -> Project | Node:
    """Parse a manifest dict into a Project or Node, checking every rule.

    Raises ``Invalid`` (422) listing every violation with its field path, e.g.
    ``spec.services[1].image: must not be empty``; ``BadRequest`` when ``data`` is not an object.
    When ``kind`` is given the manifest must be of that kind.
    """
    raise NotImplementedError


def validate_project(project: Project) -> list[FieldError]:
    """Semantic rules of a Project (the model already checked types)."""
    raise NotImplementedError


def validate_node(node: Node) -> list[FieldError]:
    """Semantic rules of a Node."""
    raise NotImplementedError
