"""cara-agent configuration: precedence env > .env > config.yaml > defaults, flags on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import (
    AgentConfig,
    ConfigError,
    detect_advertise_ip,
    load_config,
    parse_duration,
    parse_listen_addr,
)


def _load(tmp_path: Path, *, yaml: str = "", dotenv: str = "", env: dict[str, str] | None = None,
          flags: dict[str, object] | None = None) -> AgentConfig:
    (tmp_path / "config.yaml").write_text(yaml)
    (tmp_path / ".env").write_text(dotenv)
    return load_config(
        flags=flags,
        environ=env or {},
        config_file=tmp_path / "config.yaml",
        env_file=tmp_path / ".env",
    )


def test_defaults(tmp_path: Path) -> None:
    config = _load(tmp_path)
    assert config.server_url == "http://localhost:8080"
    assert config.heartbeat_interval == 30.0
    assert config.docker_host == "unix:///var/run/docker.sock"
    assert config.listen_port == 9090
    assert (config.proxy_host, config.proxy_port) == ("0.0.0.0", 8081)
    assert config.advertise_ip is None
    assert (config.environment, config.base_domain) == ("dev", "cara.local")
    assert config.node_name  # the hostname


def test_precedence(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        yaml="node_name: from-yaml\nserver_url: http://yaml:1\nheartbeat_interval: 5s\n"
        "debug: true\n",
        dotenv="NODE_NAME=from-dotenv\nSERVER_URL=http://dotenv:2\n",
        env={"NODE_NAME": "from-env", "DEBUG": "false"},
        flags={"node_name": None, "listen_port": "9191"},
    )
    assert config.node_name == "from-env"  # env beats .env beats yaml
    assert config.server_url == "http://dotenv:2"  # .env beats yaml
    assert config.heartbeat_interval == 5.0  # yaml beats defaults
    assert config.debug is False  # a later source can set a bool back to false
    assert config.listen_port == 9191  # flags beat everything


def test_yaml_accepts_environment_names(tmp_path: Path) -> None:
    config = _load(tmp_path, yaml="DOCKER_HOST: unix:///tmp/d.sock\nCARA_BASE_DOMAIN: x.org\n")
    assert config.docker_host == "unix:///tmp/d.sock"
    assert config.base_domain == "x.org"


def test_dotenv_does_not_touch_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NODE_NAME", raising=False)
    _load(tmp_path, dotenv="NODE_NAME=sneaky\n")
    import os

    assert "NODE_NAME" not in os.environ


def test_empty_advertise_ip_means_detect(tmp_path: Path) -> None:
    assert _load(tmp_path, env={"AGENT_ADVERTISE_IP": ""}).advertise_ip is None
    assert _load(tmp_path, env={"AGENT_ADVERTISE_IP": "10.0.0.5"}).advertise_address() == "10.0.0.5"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"HEARTBEAT_INTERVAL": "soon"}, "heartbeat_interval"),
        ({"AGENT_LISTEN_PORT": "99999"}, "listen_port"),
        ({"SERVER_URL": "localhost:8080"}, "server_url"),
        ({"DEBUG": "maybe"}, "debug"),
        ({"AGENT_WORKERS": "0"}, "workers"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _load(tmp_path, env=env)


def test_unknown_yaml_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nodename"):
        _load(tmp_path, yaml="nodename: x\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5", 1.5), (3, 3.0)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "10x", "-1s", "0", "1m x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":8081", ("0.0.0.0", 8081)), ("127.0.0.1:0", ("127.0.0.1", 0)),
     ("[::1]:9000", ("::1", 9000)), ("8081", ("0.0.0.0", 8081))],
)
def test_parse_listen_addr(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_addr(text, "proxy_listen_addr") == expected


def test_detect_advertise_ip_for_a_local_server() -> None:
    assert detect_advertise_ip("http://127.0.0.1:8080") == "127.0.0.1"
