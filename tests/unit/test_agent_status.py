"""Status computation from container states (pure)."""

from __future__ import annotations

from agent.runtime import ContainerInfo
from agent.status import Failure, apply_observation, observe, terminated_status
from caravanserai.api import ConditionStatus, ProjectPhase, ProjectStatus, get_condition


def c(state: str, exit_code: int | None = None, **kw: object) -> ContainerInfo:
    return ContainerInfo(id="0123456789abcdef", name="p-x", labels={}, state=state,
                         exit_code=exit_code, **kw)  # type: ignore[arg-type]


def test_all_running() -> None:
    obs = observe(["db", "web"], {"db": c("running"), "web": c("running")})
    assert obs.phase == ProjectPhase.RUNNING
    assert obs.condition.type == "ContainersRunning"
    assert obs.condition.status == ConditionStatus.TRUE
    assert obs.condition.reason == "ContainersRunning"
    assert [s.state for s in obs.services] == ["running", "running"]
    assert obs.services[0].container_id == "0123456789ab"


def test_exited_container_fails_the_project() -> None:
    obs = observe(["db", "web"], {"db": c("running"), "web": c("exited", 3)})
    assert obs.phase == ProjectPhase.FAILED
    assert obs.condition.status == ConditionStatus.FALSE
    assert obs.condition.reason == "ContainerExited"
    assert "web (exit code 3)" in (obs.condition.message or "")
    web = obs.services[1]
    assert (web.state, web.exit_code, web.message) == ("exited", 3, "exited with code 3")


def test_oom_is_said() -> None:
    obs = observe(["a"], {"a": c("exited", 137, oom_killed=True)})
    assert "out of memory" in (obs.services[0].message or "")


def test_failure_reasons_win_with_their_message() -> None:
    msg = 'failed to pull image "myapp:typo": not found'
    obs = observe(["app"], {"app": None}, [Failure("ImagePullFailed", msg, "app")])
    assert obs.phase == ProjectPhase.FAILED
    assert obs.condition.reason == "ImagePullFailed"
    assert obs.condition.message == msg
    assert obs.services[0].state == "missing"
    assert obs.services[0].message == msg


def test_pull_failure_is_reported_before_a_port_conflict() -> None:
    obs = observe(
        ["a", "b"],
        {"a": c("created"), "b": None},
        [Failure("PortConflict", "port is already allocated", "a"),
         Failure("ImagePullFailed", "failed to pull image", "b")],
    )
    assert obs.condition.reason == "ImagePullFailed"
    assert "port is already allocated" in (obs.condition.message or "")


def test_starting_is_not_settled() -> None:
    obs = observe(["a", "b"], {"a": c("running"), "b": c("created")})
    assert obs.phase is None and not obs.settled
    assert obs.condition.reason == "ContainersStarting"
    assert observe(["a"], {"a": None}).phase is None


def test_apply_observation_sets_generation_and_conditions() -> None:
    status = ProjectStatus(phase=ProjectPhase.SCHEDULED, node_ref="n")
    obs = observe(["a"], {"a": c("running")})
    new = apply_observation(status, obs, 3)
    assert new is not None
    assert new.phase == ProjectPhase.RUNNING
    assert new.observed_generation == 3
    assert new.node_ref == "n"
    cond = get_condition(new.conditions, "ContainersRunning")
    assert cond is not None and cond.last_transition_time is not None
    phase = get_condition(new.conditions, "Phase")
    assert phase is not None and phase.reason == "ContainersRunning"
    # The same observation again changes nothing: no write, no revision churn.
    assert apply_observation(new, obs, 3) is None


def test_apply_unsettled_observation_keeps_phase_and_generation() -> None:
    status = ProjectStatus(phase=ProjectPhase.RUNNING, node_ref="n", observed_generation=1)
    new = apply_observation(status, observe(["a"], {"a": c("created")}), 2)
    assert new is not None
    assert new.phase == ProjectPhase.RUNNING
    assert new.observed_generation == 1


def test_terminated_status() -> None:
    status = ProjectStatus(phase=ProjectPhase.TERMINATING, node_ref="n")
    new = terminated_status(status)
    assert new.phase == ProjectPhase.TERMINATED
    assert new.services == []
    cond = get_condition(new.conditions, "ContainersRunning")
    assert cond is not None and cond.reason == "ResourcesRemoved"
