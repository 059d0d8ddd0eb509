"""The CLI's settings: where the server is, the token, the timeout.

Precedence, highest first: command-line flag > environment variable > config file > default.
The config file is YAML at ``platformdirs.user_config_dir("caravanserai")/config.yaml``
(``CARA_CONFIG`` names another file, which tests and users with several clusters use).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from caravanserai.api.config import ConfigError, parse_duration

DEFAULT_SERVER = "http://localhost:8080"
# Long enough for a slow list over a bad link, short enough that a dead server is noticed.
DEFAULT_TIMEOUT = 30.0

ENV_SERVER = "CARA_SERVER"
ENV_TOKEN = "CARA_TOKEN"
ENV_TIMEOUT = "CARA_TIMEOUT"
ENV_CONFIG = "CARA_CONFIG"
ENV_CA = "CARA_CERTIFICATE_AUTHORITY"

# Keys the file may hold, with what ``config set`` accepts for each.
CONFIG_KEYS: tuple[str, ...] = ("server", "token", "timeout", "certificate-authority")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    override = env.get(ENV_CONFIG)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("caravanserai")) / "config.yaml"


def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    return yaml


def load_config(path: Path) -> dict[str, Any]:
    """The file's mapping; empty when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = _yaml().load(text)
    except YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}"
            f" (known: {', '.join(CONFIG_KEYS)})"
        )
    return dict(data)


def save_config(path: Path, data: Mapping[str, Any]) -> None:
    """Write the file atomically; it may hold a token, so only the user may read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    _yaml().dump({k: data[k] for k in CONFIG_KEYS if data.get(k) is not None}, buf)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def normalize_server(url: str) -> str:
    """Accept ``host:port`` as kubectl does, and drop a trailing slash."""
    url = url.strip()
    if not url:
        raise ConfigError("the server URL is empty")
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise ConfigError(f"server URL {url!r} must start with http:// or https://")
    return url.rstrip("/")


def parse_timeout(value: Any, source: str) -> float:
    """Seconds, as a number or with a unit (``30``, ``30s``, ``2m``, ``500ms``); 0 = no limit."""
    return parse_duration(value, source, allow_zero=True)


@dataclass(frozen=True)
class Settings:
    """The resolved settings every command uses, with where the server came from."""

    server: str
    token: str | None
    timeout: float | None  # None: no limit
    server_source: str  # "flag", "env", "config", "default"
    config_file: Path
    # A PEM CA file to verify an https server with (None: the system's CAs).
    certificate_authority: str | None = None


def resolve_settings(
    *,
    server: str | None = None,
    token: str | None = None,
    timeout: str | None = None,
    certificate_authority: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Apply the precedence flag > env > config file > default to every setting."""
    env = os.environ if environ is None else environ
    path = config_path(env)
    file = load_config(path)

    def pick(flag: Any, env_key: str, file_key: str) -> tuple[Any, str]:
        if flag is not None:
            return flag, "flag"
        if env.get(env_key):
            return env[env_key], "env"
        if file.get(file_key) is not None:
            return file[file_key], "config"
        return None, "default"

    raw_server, server_source = pick(server, ENV_SERVER, "server")
    server_url = normalize_server(str(raw_server)) if raw_server is not None else DEFAULT_SERVER
    raw_token, _ = pick(token, ENV_TOKEN, "token")
    raw_timeout, timeout_source = pick(timeout, ENV_TIMEOUT, "timeout")
    raw_ca, _ = pick(certificate_authority, ENV_CA, "certificate-authority")
    seconds = (
        DEFAULT_TIMEOUT
        if raw_timeout is None
        else parse_timeout(raw_timeout, {"flag": "--timeout", "env": ENV_TIMEOUT}.get(
            timeout_source, f"{path}: timeout"))
    )
    return Settings(
        server=server_url,
        token=str(raw_token) if raw_token else None,
        timeout=seconds or None,
        server_source=server_source,
        config_file=path,
        certificate_authority=str(raw_ca) if raw_ca else None,
    )
