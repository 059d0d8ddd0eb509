"""cara-server configuration: defaults < ``config.yaml`` < ``.env`` < environment < flags.

The seeds say environment variables take precedence over the files; the original loaded
``.env`` with *override* (so a file beat the real environment) and merged only non-zero
values, so ``DEBUG=false`` could never undo ``debug: true`` (REFERENCE §7). Here every
source is read without touching ``os.environ``, later sources replace earlier ones value by
value, and an explicitly empty or false value counts.

| setting | env / .env | config.yaml key | flag | default |
|---|---|---|---|---|
| database_url | ``DATABASE_URL`` | ``database_url`` | ``--database-url`` | required |
| listen_database_url | ``CARA_LISTEN_DATABASE_URL`` | ``listen_database_url`` | - | DATABASE_URL |
| host | ``HOST`` | ``host`` | ``--host`` | ``0.0.0.0`` |
| port | ``PORT`` | ``port`` | ``--port`` | ``8080`` |
| debug | ``DEBUG`` | ``debug`` | ``--debug/--no-debug`` | false |
| otel_collector_url | ``OTEL_COLLECTOR_URL`` | ``otel_collector_url`` | ``--otel-...`` | unset |
| bookmark_interval | ``CARA_BOOKMARK_INTERVAL`` | ``bookmark_interval`` | - | 10 s |
| watch_timeout | ``CARA_WATCH_TIMEOUT`` | ``watch_timeout`` | - | 1800 s |
| watch_linger | ``CARA_WATCH_LINGER`` | ``watch_linger`` | - | 0.005 s |
| request_timeout | ``CARA_REQUEST_TIMEOUT`` | ``request_timeout`` | - | 30 s |
| max_body_bytes | ``CARA_MAX_BODY_BYTES`` | ``max_body_bytes`` | - | 1048576 |
| shutdown_timeout | ``CARA_SHUTDOWN_TIMEOUT`` | ``shutdown_timeout`` | - | 10 s |
| event_retention | ``CARA_EVENT_RETENTION`` | ``event_retention`` | - | 100000 events |
| event_retention_age | ``CARA_EVENT_RETENTION_AGE`` | ``event_retention_age`` | - | 3600 s |
| compaction_interval | ``CARA_COMPACTION_INTERVAL`` | ``compaction_interval`` | - | 60 s |
| db_pool_size | ``CARA_DB_POOL_SIZE`` | ``db_pool_size`` | - | 20 |
| connect_timeout | ``CARA_CONNECT_TIMEOUT`` | ``connect_timeout`` | - | 10 s |
| watch_cache_bytes | ``CARA_WATCH_CACHE_BYTES`` | ``watch_cache_bytes`` | - | 64 MiB |
| watch_queue_bytes | ``CARA_WATCH_QUEUE_BYTES`` | ``watch_queue_bytes`` | - | 16 MiB |
| watch_future_wait | ``CARA_WATCH_FUTURE_WAIT`` | ``watch_future_wait`` | - | 3 s |
| workers | ``CARA_WORKERS`` | ``workers`` | ``--workers`` | 1 (``auto``: one per CPU) |
| header_timeout | ``CARA_HEADER_TIMEOUT`` | ``header_timeout`` | - | 30 s |
| idle_timeout | ``CARA_IDLE_TIMEOUT`` | ``idle_timeout`` | - | 75 s |
| max_connections | ``CARA_MAX_CONNECTIONS`` | ``max_connections`` | - | 4096 |
| ws_max_message_bytes | ``CARA_WS_MAX_MESSAGE_BYTES`` | ``ws_max_message_bytes`` | - | 4194304 |
| api_token | ``CARA_API_TOKEN`` | ``api_token`` | - | unset (a static admin token) |
| bootstrap_token | ``CARA_BOOTSTRAP_TOKEN`` | ``bootstrap_token`` | - | generated |
| join_token | ``CARA_JOIN_TOKEN`` | ``join_token`` | - | unset |
| insecure_allow_anonymous | ``CARA_INSECURE_ALLOW_ANONYMOUS`` | ... | ``--insecure-...`` | false |
| metrics_anonymous | ``CARA_METRICS_ANONYMOUS`` | ``metrics_anonymous`` | - | true |
| tls_cert_file | ``CARA_TLS_CERT_FILE`` | ``tls_cert_file`` | ``--tls-cert-file`` | unset (HTTP) |
| tls_key_file | ``CARA_TLS_KEY_FILE`` | ``tls_key_file`` | ``--tls-key-file`` | unset |
| agent_ca | ``CARA_AGENT_CA`` | ``agent_ca`` | - | unset (the relay speaks HTTP to agents) |

``config.yaml`` keys may also be written as the environment names (``DATABASE_URL:``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from caravanserai.api.config import ConfigError, parse_duration

CONFIG_FILE = "config.yaml"
ENV_FILE = ".env"




def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise ValueError("must be true/1 or false/0")


def _int(text: str, message: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(message) from None


def _parse_port(text: str) -> int:
    message = "must be an integer between 0 and 65535"
    port = _int(text, message)
    if not 0 <= port <= 65535:
        raise ValueError(message)
    return port


def _parse_seconds(text: str) -> float:
    try:
        return parse_duration(text, "duration")
    except ConfigError as exc:
        raise ValueError(exc.reason) from None


def _parse_non_negative_seconds(text: str) -> float:
    try:
        return parse_duration(text, "duration", allow_zero=True)
    except ConfigError as exc:
        raise ValueError(exc.reason) from None


def _parse_positive_int(text: str) -> int:
    message = "must be a positive integer"
    value = _int(text, message)
    if value <= 0:
        raise ValueError(message)
    return value


def _parse_workers(text: str) -> int:
    from caravanserai.server.workers import parse_workers

    return parse_workers(text)


def _parse_optional_str(text: str) -> str | None:
    # An explicitly empty value unsets (e.g. OTEL_COLLECTOR_URL= overriding config.yaml).
    return text.strip() or None


@dataclass(frozen=True)
class _Setting:
    name: str
    env: str
    parse: Callable[[str], Any]


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("database_url", "DATABASE_URL", _parse_optional_str),
    _Setting("listen_database_url", "CARA_LISTEN_DATABASE_URL", _parse_optional_str),
    _Setting("host", "HOST", str.strip),
    _Setting("port", "PORT", _parse_port),
    _Setting("debug", "DEBUG", _parse_bool),
    _Setting("otel_collector_url", "OTEL_COLLECTOR_URL", _parse_optional_str),
    _Setting("bookmark_interval", "CARA_BOOKMARK_INTERVAL", _parse_seconds),
    _Setting("watch_timeout", "CARA_WATCH_TIMEOUT", _parse_seconds),
    _Setting("watch_linger", "CARA_WATCH_LINGER", _parse_non_negative_seconds),
    _Setting("request_timeout", "CARA_REQUEST_TIMEOUT", _parse_seconds),
    _Setting("max_body_bytes", "CARA_MAX_BODY_BYTES", _parse_positive_int),
    _Setting("shutdown_timeout", "CARA_SHUTDOWN_TIMEOUT", _parse_seconds),
    _Setting("event_retention", "CARA_EVENT_RETENTION", _parse_positive_int),
    _Setting("event_retention_age", "CARA_EVENT_RETENTION_AGE", _parse_seconds),
    _Setting("compaction_interval", "CARA_COMPACTION_INTERVAL", _parse_seconds),
    _Setting("db_pool_size", "CARA_DB_POOL_SIZE", _parse_positive_int),
    _Setting("connect_timeout", "CARA_CONNECT_TIMEOUT", _parse_seconds),
    _Setting("api_token", "CARA_API_TOKEN", _parse_optional_str),
    _Setting("watch_cache_bytes", "CARA_WATCH_CACHE_BYTES", _parse_positive_int),
    _Setting("watch_queue_bytes", "CARA_WATCH_QUEUE_BYTES", _parse_positive_int),
    _Setting("watch_future_wait", "CARA_WATCH_FUTURE_WAIT", _parse_non_negative_seconds),
    _Setting("workers", "CARA_WORKERS", _parse_workers),
    _Setting("header_timeout", "CARA_HEADER_TIMEOUT", _parse_seconds),
    _Setting("idle_timeout", "CARA_IDLE_TIMEOUT", _parse_seconds),
    _Setting("max_connections", "CARA_MAX_CONNECTIONS", _parse_positive_int),
    _Setting("ws_max_message_bytes", "CARA_WS_MAX_MESSAGE_BYTES", _parse_positive_int),
    _Setting("bootstrap_token", "CARA_BOOTSTRAP_TOKEN", _parse_optional_str),
    _Setting("join_token", "CARA_JOIN_TOKEN", _parse_optional_str),
    _Setting("insecure_allow_anonymous", "CARA_INSECURE_ALLOW_ANONYMOUS", _parse_bool),
    _Setting("metrics_anonymous", "CARA_METRICS_ANONYMOUS", _parse_bool),
    _Setting("tls_cert_file", "CARA_TLS_CERT_FILE", _parse_optional_str),
    _Setting("tls_key_file", "CARA_TLS_KEY_FILE", _parse_optional_str),
    _Setting("agent_ca", "CARA_AGENT_CA", _parse_optional_str),
)
_BY_NAME = {s.name: s for s in _SETTINGS}
_BY_ENV = {s.env: s for s in _SETTINGS}


@dataclass(frozen=True)
class ServerConfig:
    """Everything cara-server needs to know; immutable once loaded."""

    database_url: str | None = None
    # The watch hub's LISTEN connection, when DATABASE_URL goes through a transaction-mode
    # pooler (PgBouncer cannot carry LISTEN); unset means DATABASE_URL.
    listen_database_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    debug: bool = False
    otel_collector_url: str | None = None
    # Idle watchers get a BOOKMARK this often (when they asked for bookmarks).
    bookmark_interval: float = 10.0
    # Longest a watch stays open; clients reconnect from their last revision (as Kubernetes).
    watch_timeout: float = 1800.0
    # A busy watch stream waits this long to send events arriving together in one write
    # (fewer wake-ups and syscalls per event under load; 0 disables).
    watch_linger: float = 0.005
    # Upper bound for any non-streaming request; a handler past it answers 503.
    request_timeout: float = 30.0
    max_body_bytes: int = 1024 * 1024
    # How long in-flight requests get to finish after SIGTERM.
    shutdown_timeout: float = 10.0
    # Event-log retention: a watch from an older revision gets 410 and relists.
    event_retention: int = 100_000
    event_retention_age: float = 3600.0
    compaction_interval: float = 60.0
    db_pool_size: int = 20
    # How long startup waits for PostgreSQL before giving up with one clear line.
    connect_timeout: float = 10.0
    # A static admin token (existing setups); tokens in the database are the usual way.
    api_token: str | None = field(default=None, repr=False)
    # Watch-path memory: recent events kept for watchers (the encoded-line cache gets half
    # as much again), and the most one watcher may have queued before it is ended with 410.
    watch_cache_bytes: int = 64 * 1024 * 1024
    watch_queue_bytes: int = 16 * 1024 * 1024
    # How long a watch from a revision this server has not reached waits before a 504.
    watch_future_wait: float = 3.0
    # Server processes on the one port (caravanserai/server/workers.py).
    workers: int = 1
    # Connection limits (caravanserai.connections): a request head must arrive within
    # header_timeout, a keep-alive connection idle longer than idle_timeout is closed, and
    # past max_connections a new connection gets 503. WebSocket messages (port-forward) are
    # at most ws_max_message_bytes on the relay's both sides.
    header_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 4096
    ws_max_message_bytes: int = 4 * 1024 * 1024
    # The admin token created on the first start on an empty database (else generated).
    bootstrap_token: str | None = field(default=None, repr=False)
    # A static join token: agents exchange it for their node credential.
    join_token: str | None = field(default=None, repr=False)
    # No token needed: anonymous requests act as admin (a warning at every start).
    insecure_allow_anonymous: bool = False
    # /metrics without a token (Prometheus scrapers); false: it needs one (any role).
    metrics_anonymous: bool = True
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Set: the relay connects to agents over HTTPS (their --tls-cert-file), trusting this CA.
    agent_ca: str | None = None
    # Where each value came from ("default", "config.yaml", ".env", "environment", "flag"),
    # for error messages and the startup log.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def with_overrides(self, **values: Any) -> ServerConfig:
        """A copy with some settings replaced (tests and embedding programs)."""
        return replace(self, **values)

    @property
    def redacted_database_url(self) -> str:
        return redact_url(self.database_url or "")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe to log and print)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _read_yaml(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise ConfigError(f"{path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of settings")
    out: dict[str, str] = {}
    for key, value in data.items():
        if value is None:
            continue
        # YAML booleans come back as bool: normalise to the text form the parsers take.
        out[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _normalise_key(key: str) -> str | None:
    """Map a config.yaml key (``database_url`` or ``DATABASE_URL``) to a setting name."""
    if key.upper() in _BY_ENV:
        return _BY_ENV[key.upper()].name
    lowered = key.lower().replace("-", "_").removeprefix("cara_")
    return lowered if lowered in _BY_NAME else None


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config_file: Path | None = None,
    env_file: Path | None = None,
) -> ServerConfig:
    """Read the configuration from every source; raise ConfigError with one line on bad input.

    ``flags`` are the command-line values, None meaning "not given". ``environ`` defaults to
    ``os.environ`` (read, never written); the files default to the working directory's.
    """
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    config_file = config_file or cwd / CONFIG_FILE
    env_file = env_file or cwd / ENV_FILE

    raw: dict[str, tuple[str, Any]] = {}  # setting name -> (source, raw value)
    warnings: list[str] = []

    for key, value in _read_yaml(config_file).items():
        name = _normalise_key(key)
        if name is None:
            warnings.append(f"{config_file}: unknown setting {key!r} ignored")
            continue
        raw[name] = (str(config_file.name), value)

    if env_file.is_file():
        try:
            dotenv = dotenv_values(env_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {env_file}: {exc}") from None
        for key, text in dotenv.items():
            if text is not None and key in _BY_ENV:
                raw[_BY_ENV[key].name] = (ENV_FILE, text)

    for env_name, setting in _BY_ENV.items():
        if env_name in environ:
            raw[setting.name] = ("environment", environ[env_name])

    values: dict[str, Any] = {}
    sources: dict[str, str] = {f.name: "default" for f in fields(ServerConfig)}
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name not in _BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = value
        sources[name] = "flag"
        raw.pop(name, None)  # overridden: a bad value in a file does not matter then

    for name, (source, text) in raw.items():
        setting = _BY_NAME[name]
        try:
            values[name] = setting.parse(text)
        except ValueError as exc:
            where = setting.env if source in ("environment", ENV_FILE) else name
            reason = str(exc) if "must" in str(exc) else "invalid value"
            raise ConfigError(f"invalid {where} {text!r} (from {source}): {reason}") from None
        sources[name] = source

    return ServerConfig(**values, sources=sources, warnings=tuple(warnings))


def require_database_url(config: ServerConfig) -> str:
    """The DSN, or ConfigError with the one line the seeds promise."""
    if not config.database_url:
        raise ConfigError(
            "DATABASE_URL is required: set it in the environment, .env, config.yaml "
            "or with --database-url"
        )
    return config.database_url
