"""caractrl settings: flag > env > config file > default; the config file itself."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cli.config import (
    DEFAULT_SERVER,
    ConfigError,
    load_config,
    normalize_server,
    parse_timeout,
    resolve_settings,
    save_config,
)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "caravanserai" / "config.yaml"


def env_for(cfg: Path, **extra: str) -> dict[str, str]:
    return {"CARA_CONFIG": str(cfg), **extra}


def test_default(cfg: Path) -> None:
    s = resolve_settings(environ=env_for(cfg))
    assert (s.server, s.server_source, s.token, s.timeout) == (
        DEFAULT_SERVER,
        "default",
        None,
        30.0,
    )


def test_precedence_flag_env_file_default(cfg: Path) -> None:
    save_config(cfg, {"server": "http://file:1", "token": "t-file", "timeout": "5s"})
    s = resolve_settings(environ=env_for(cfg))
    assert (s.server, s.server_source, s.token, s.timeout) == (
        "http://file:1",
        "config",
        "t-file",
        5,
    )
    env = env_for(cfg, CARA_SERVER="http://env:2", CARA_TOKEN="t-env", CARA_TIMEOUT="1m")
    s = resolve_settings(environ=env)
    assert (s.server, s.server_source, s.token, s.timeout) == ("http://env:2", "env", "t-env", 60)
    s = resolve_settings(server="flag:3", token="t-flag", timeout="0", environ=env)
    assert (s.server, s.server_source, s.token, s.timeout) == (
        "http://flag:3",
        "flag",
        "t-flag",
        None,
    )


def test_save_is_private_and_round_trips(cfg: Path) -> None:
    save_config(cfg, {"server": "http://a:1", "token": "secret"})
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert load_config(cfg) == {"server": "http://a:1", "token": "secret"}


def test_bad_file(cfg: Path) -> None:
    cfg.parent.mkdir(parents=True)
    cfg.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg)
    cfg.write_text("servr: http://x\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(cfg)


@pytest.mark.parametrize(
    ("given", "url"),
    [("localhost:8080", "http://localhost:8080"), ("https://c.example/", "https://c.example")],
)
def test_normalize_server(given: str, url: str) -> None:
    assert normalize_server(given) == url


def test_normalize_server_rejects_other_schemes() -> None:
    with pytest.raises(ConfigError):
        normalize_server("ftp://x")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30), ("30s", 30), ("2m", 120), ("500ms", 0.5), ("1h", 3600)]
)
def test_parse_timeout(text: str, seconds: float) -> None:
    assert parse_timeout(text, "x") == seconds


def test_parse_timeout_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_timeout("soon", "--timeout")
