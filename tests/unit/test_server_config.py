"""cara-server configuration: sources, precedence and error messages (no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caravanserai.server.config import (
    ConfigError,
    ServerConfig,
    load_config,
    redact_url,
    require_database_url,
)


def write(tmp_path: Path, yaml: str | None = None, dotenv: str | None = None) -> None:
    if yaml is not None:
        (tmp_path / "config.yaml").write_text(yaml)
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)


def test_defaults(tmp_path: Path) -> None:
    config = load_config(environ={}, cwd=tmp_path)
    assert config == ServerConfig()
    assert (config.host, config.port, config.debug) == ("0.0.0.0", 8080, False)
    assert config.database_url is None and config.otel_collector_url is None
    assert config.bookmark_interval == 10.0
    assert set(config.sources.values()) == {"default"}


def test_environment_beats_dotenv_beats_yaml(tmp_path: Path) -> None:
    write(
        tmp_path,
        yaml="database_url: postgresql://yaml/db\nport: 1111\nhost: 10.0.0.1\ndebug: true\n",
        dotenv="DATABASE_URL=postgresql://dotenv/db\nPORT=2222\n",
    )
    config = load_config(environ={"DATABASE_URL": "postgresql://env/db"}, cwd=tmp_path)
    assert config.database_url == "postgresql://env/db"
    assert config.port == 2222  # .env over config.yaml
    assert config.host == "10.0.0.1"  # only config.yaml sets it
    assert config.debug is True
    assert config.sources["database_url"] == "environment"
    assert config.sources["port"] == ".env"
    assert config.sources["host"] == "config.yaml"


def test_flags_beat_everything(tmp_path: Path) -> None:
    write(tmp_path, yaml="port: 1111\n", dotenv="PORT=2222\n")
    config = load_config({"port": 3333, "host": None}, environ={"PORT": "4444"}, cwd=tmp_path)
    assert config.port == 3333 and config.sources["port"] == "flag"
    assert config.host == "0.0.0.0"  # None means "flag not given"


def test_false_and_empty_values_count(tmp_path: Path) -> None:
    # The original merged only non-zero values: DEBUG=false could not undo debug: true.
    write(tmp_path, yaml="debug: true\notel_collector_url: http://collector:4317\n")
    config = load_config(environ={"DEBUG": "false", "OTEL_COLLECTOR_URL": ""}, cwd=tmp_path)
    assert config.debug is False
    assert config.otel_collector_url is None
    config = load_config({"debug": False}, environ={"DEBUG": "1"}, cwd=tmp_path)
    assert config.debug is False


@pytest.mark.parametrize("text", ["true", "1", "TRUE", "yes", "on"])
def test_debug_truthy(tmp_path: Path, text: str) -> None:
    assert load_config(environ={"DEBUG": text}, cwd=tmp_path).debug is True


def test_dotenv_does_not_touch_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("PORT", raising=False)
    write(tmp_path, dotenv="PORT=2222\n")
    assert load_config(cwd=tmp_path).port == 2222
    assert "PORT" not in os.environ


def test_yaml_accepts_environment_names_and_cara_settings(tmp_path: Path) -> None:
    write(tmp_path, yaml="DATABASE_URL: postgresql://x/db\nbookmark_interval: 2.5\n"
                         "CARA_WATCH_TIMEOUT: 60\nmystery: 1\n")
    config = load_config(environ={"CARA_MAX_BODY_BYTES": "2048"}, cwd=tmp_path)
    assert config.database_url == "postgresql://x/db"
    assert config.bookmark_interval == 2.5 and config.watch_timeout == 60.0
    assert config.max_body_bytes == 2048
    assert any("mystery" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PORT": "http"}, "invalid PORT 'http' (from environment): must be an integer"),
        ({"PORT": "70000"}, "invalid PORT '70000' (from environment): must be an integer"),
        ({"DEBUG": "maybe"}, "invalid DEBUG 'maybe' (from environment): must be true/1"),
        ({"CARA_BOOKMARK_INTERVAL": "-1"}, "must be a positive number of seconds"),
        ({"CARA_MAX_BODY_BYTES": "0"}, "must be a positive integer"),
    ],
)
def test_invalid_values_name_the_setting_and_source(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ=environ, cwd=tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_broken_yaml_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, yaml="port: [1\n")
    with pytest.raises(ConfigError) as err:
        load_config(environ={}, cwd=tmp_path)
    assert "config.yaml is not valid YAML" in str(err.value) and "\n" not in str(err.value)
    write(tmp_path, yaml="- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(environ={}, cwd=tmp_path)


def test_database_url_is_required() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is required"):
        require_database_url(ServerConfig())
    assert require_database_url(ServerConfig(database_url="postgresql://x")) == "postgresql://x"


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db?sslmode=disable") == (
        "postgresql://u:***@h:5432/db?sslmode=disable"
    )
    assert redact_url("postgresql://h/db") == "postgresql://h/db"
