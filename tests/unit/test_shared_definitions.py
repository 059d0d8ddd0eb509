"""The one definition of each shared thing: duration parser, ConfigError, phase sets."""

from __future__ import annotations

import pytest

import agent.config
import cli.config
import controllers.settings
from caravanserai.api.config import ConfigError, parse_duration
from caravanserai.api.phases import OCCUPYING_PHASES
from caravanserai.api.project import Project, ProjectPhase
from caravanserai.server import config as server_config
from caravanserai.server.manager import ManagerSettings
from controllers.scheduler import occupied_node


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("1m", 60.0), ("1h30m", 5400.0), ("90", 90.0),
     ("1.5", 1.5), (" 2M ", 120.0), (7, 7.0)],
)
def test_parse_duration_accepts_every_documented_form(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "1x", "-1s", "0", "nan", "inf", "1m x", True])
def test_parse_duration_rejects_with_the_setting_named(text: object) -> None:
    with pytest.raises(ConfigError, match=r"^lease: "):
        parse_duration(text, "lease")


def test_zero_only_where_allowed() -> None:
    assert parse_duration("0", allow_zero=True) == 0.0


def test_every_program_shares_one_config_error() -> None:
    assert agent.config.ConfigError is ConfigError
    assert cli.config.ConfigError is ConfigError
    assert server_config.ConfigError is ConfigError
    assert controllers.settings.SettingsError is ConfigError


def test_leader_lease_accepts_minutes() -> None:
    settings = ManagerSettings.from_env({"CARA_LEADER_LEASE_DURATION": "1m"})
    assert settings.lease_duration == 60.0


def _project(phase: ProjectPhase) -> Project:
    return Project.model_validate(
        {"metadata": {"name": "p"}, "spec": {"services": [{"name": "s", "image": "i"}]},
         "status": {"phase": phase, "nodeRef": "n1"}}
    )


@pytest.mark.parametrize("phase", list(ProjectPhase))
def test_scheduler_load_uses_the_occupying_set(phase: ProjectPhase) -> None:
    expected = "n1" if phase in OCCUPYING_PHASES else None
    assert occupied_node(_project(phase)) == expected


def test_failed_projects_occupy_their_node() -> None:
    # Their containers may still exist on the node; a spec change redeploys them in place.
    assert ProjectPhase.FAILED in OCCUPYING_PHASES
    assert ProjectPhase.PENDING not in OCCUPYING_PHASES
    assert ProjectPhase.TERMINATED not in OCCUPYING_PHASES
