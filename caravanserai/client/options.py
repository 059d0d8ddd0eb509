"""What a list or watch selects, and what a list returns (shared by every client)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from caravanserai.api.event import Event
from caravanserai.api.node import Node
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.api.selectors import Selector

__all__ = ["ListOptions", "ObjectList"]

T = TypeVar("T", bound=Project | Node | Event)


@dataclass(frozen=True, slots=True)
class ListOptions:
    """What a list or watch selects. Hashable: shared informers are keyed by it.

    ``phase`` is an OR-set (the repeatable ``?phase=``); all parts are ANDed.
    """

    label_selector: str | None = None
    field_selector: str | None = None
    phase: tuple[str, ...] = ()
    node_ref: str | None = None

    @classmethod
    def of(
        cls,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        phase: str | ProjectPhase | Iterable[str] | None = None,
        node_ref: str | None = None,
    ) -> ListOptions:
        """Build options, accepting one phase or several."""
        if phase is None:
            phases: tuple[str, ...] = ()
        elif isinstance(phase, str):
            phases = (str(phase),)
        else:
            phases = tuple(sorted(str(p) for p in phase))
        return cls(label_selector or None, field_selector or None, phases, node_ref)

    def to_params(self) -> list[tuple[str, str]]:
        """The query parameters of this selection."""
        params: list[tuple[str, str]] = []
        if self.label_selector:
            params.append(("labelSelector", self.label_selector))
        if self.field_selector:
            params.append(("fieldSelector", self.field_selector))
        params.extend(("phase", p) for p in self.phase)
        if self.node_ref is not None:
            params.append(("nodeRef", self.node_ref))
        return params

    def to_selector(self) -> Selector:
        """The same selection as a parsed :class:`caravanserai.api.Selector` (for the store)."""
        any_of: dict[str, set[str]] = {}
        if self.phase:
            any_of["status.phase"] = set(self.phase)
        if self.node_ref is not None:
            any_of["status.nodeRef"] = {self.node_ref}
        return Selector.parse(self.label_selector, self.field_selector, any_of)


@dataclass(frozen=True, slots=True)
class ObjectList(Generic[T]):
    """One list response: the items, the revision the list saw and the next page's token."""

    items: list[T]
    resource_version: str
    continue_: str | None = None
