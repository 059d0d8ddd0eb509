"""Controller settings (config > environment > default) and the manager's selection and
leader-election settings."""

from __future__ import annotations

import pytest

from caravanserai.server.config import ConfigError
from caravanserai.server.manager import (
    ManagerSettings,
    discover_controllers,
    select_controllers,
)
from controllers.settings import (
    ControllerSettings,
    SettingsError,
    format_duration,
    load_settings,
    parse_duration,
)

BUILT_IN = ["event-ttl", "gc", "node-health", "rescheduler", "scheduler", "termination"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("1.5m", 90.0),
        ("3m", 180.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        (" 10m ", 600.0),
        (2, 2.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "5d", "nan"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(180) == "3m"
    assert format_duration(90) == "1m30s"
    assert format_duration(600) == "10m"
    assert format_duration(3660) == "1h1m"
    assert format_duration(1.5) == "1.5s"


def test_defaults_are_the_originals() -> None:
    assert load_settings("rescheduler", {}, {}) == ControllerSettings(90.0, 180.0, 600.0, 4)
    assert load_settings("scheduler", {}, {}).workers == 128


def test_config_beats_environment_beats_default() -> None:
    env = {
        "CARA_HEARTBEAT_TIMEOUT": "30s",
        "CARA_RUNNING_GRACE": "1m",
        "CARA_NODE_HEALTH_WORKERS": "2",
    }
    s = load_settings("node-health", {"heartbeat_timeout": 5}, env)
    assert (s.heartbeat_timeout, s.running_grace, s.terminating_timeout, s.workers) == (
        5.0,
        60.0,
        600.0,
        2,
    )


def test_bad_values_name_their_source() -> None:
    with pytest.raises(SettingsError, match="CARA_TERMINATING_TIMEOUT"):
        load_settings("termination", {}, {"CARA_TERMINATING_TIMEOUT": "soon"})
    with pytest.raises(SettingsError, match="workers"):
        load_settings("gc", {"workers": 0}, {})


# -- the manager's settings ----------------------------------------------------------------


def test_select_controllers() -> None:
    assert select_controllers(BUILT_IN, ["*"]) == BUILT_IN
    assert select_controllers(BUILT_IN, ["*", "-gc"]) == [n for n in BUILT_IN if n != "gc"]
    assert select_controllers(BUILT_IN, ["scheduler", "gc"]) == ["gc", "scheduler"]
    assert select_controllers(BUILT_IN, ["none"]) == []
    assert select_controllers(BUILT_IN, []) == []
    with pytest.raises(ConfigError, match="schedular"):
        select_controllers(BUILT_IN, ["schedular"])


def test_manager_settings_from_env() -> None:
    assert ManagerSettings.from_env({}) == ManagerSettings()
    s = ManagerSettings.from_env(
        {
            "CARA_CONTROLLERS": "scheduler, gc",
            "CARA_LEADER_LEASE_DURATION": "6",
            "CARA_LEADER_RENEW_DEADLINE": "4s",
            "CARA_LEADER_RETRY_PERIOD": "1",
        }
    )
    assert s.controllers == ("scheduler", "gc")
    assert (s.lease_duration, s.renew_deadline, s.retry_period) == (6.0, 4.0, 1.0)
    with pytest.raises(ConfigError, match="LEASE_DURATION"):
        ManagerSettings.from_env({"CARA_LEADER_LEASE_DURATION": "5"})
    with pytest.raises(ConfigError, match="RETRY_PERIOD"):
        ManagerSettings.from_env({"CARA_LEADER_RETRY_PERIOD": "x"})


def test_the_built_in_controllers_are_entry_points() -> None:
    factories = discover_controllers(["*"])
    assert sorted(factories) == BUILT_IN
    assert all(callable(f) for f in factories.values())
    assert sorted(discover_controllers(["*", "-scheduler"])) == [
        n for n in BUILT_IN if n != "scheduler"
    ]
