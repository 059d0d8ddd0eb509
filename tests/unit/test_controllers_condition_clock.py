"""condition clock: time left from a condition's lastTransitionTime, the timer result, and the
mark/clear writes (only the one condition changes, with the project's resourceVersion)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from test_controllers_support import FakeClient, project  # type: ignore[import-not-found]

from caravanserai.api.base import Condition, ConditionStatus, get_condition
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.informer import Result
from controllers.condition_clock import requeue_after, start_clock, stop_clock, time_left

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def mark(when: datetime | None, type_: str = "FooAt") -> Condition:
    return Condition(type=type_, status=ConditionStatus.TRUE, reason="R", last_transition_time=when)


def test_time_left_counts_from_last_transition_time() -> None:
    assert time_left(None, 60, T0) is None
    assert time_left(mark(None), 60, T0) is None
    assert time_left(mark(T0), 60, T0) == 60.0
    assert time_left(mark(T0), 60, T0 + timedelta(seconds=45)) == 15.0
    assert time_left(mark(T0), 60, T0 + timedelta(seconds=60)) == 0.0
    assert time_left(mark(T0), 60, T0 + timedelta(seconds=90)) == -30.0


def test_requeue_after() -> None:
    assert requeue_after(None) is None
    assert requeue_after(12.5) == Result(requeue_after=12.5)


async def test_start_then_stop_touch_only_their_condition() -> None:
    other = mark(T0, "Other")
    p = project("p", ProjectPhase.RUNNING, "a", rv=7, conditions=[mark(T0), other])
    client: Any = FakeClient()
    await start_clock(client, p, "FooAt", "Why", "msg", T0 + timedelta(seconds=5))
    written: Project = client.calls[0].args[0]
    assert client.calls[0].method == "projects.update_status"
    assert written.metadata.resource_version == "7"
    assert [c.type for c in written.status.conditions] == ["Other", "FooAt"]
    foo = get_condition(written.status.conditions, "FooAt")
    assert foo == Condition(
        type="FooAt",
        status=ConditionStatus.TRUE,
        reason="Why",
        message="msg",
        last_transition_time=T0 + timedelta(seconds=5),
    )
    assert [c.type for c in p.status.conditions] == ["FooAt", "Other"]  # the cached one is intact
    await stop_clock(client, p, "FooAt")
    cleared: Project = client.calls[1].args[0]
    assert cleared.status.conditions == [other]
