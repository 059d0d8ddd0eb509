"""cara-agent configuration: defaults < ``config.yaml`` < ``.env`` < environment < flags.

REFERENCE §7 keeps the original's names (``SERVER_URL``, ``NODE_NAME``, ...). Unlike the
original, the real environment wins over ``.env`` (``.env`` never touches ``os.environ``), a
later source may set a value back to false or empty, and the advertise address is detected
when unset instead of being required.

| yaml key           | environment          | flag                 | default                     |
|--------------------|----------------------|----------------------|-----------------------------|
| debug              | DEBUG                | --debug              | false                       |
| server_url         | SERVER_URL           | --server-url         | http://localhost:8080       |
| node_name          | NODE_NAME            | --node-name          | the OS hostname             |
| heartbeat_interval | HEARTBEAT_INTERVAL   | --heartbeat-interval | 30s                         |
| docker_host        | DOCKER_HOST          | --docker-host        | unix:///var/run/docker.sock |
| listen_host        | AGENT_LISTEN_HOST    | --agent-host         | the advertise address       |
| listen_port        | AGENT_LISTEN_PORT    | --agent-port         | 9090                        |
| proxy_listen_addr  | PROXY_LISTEN_ADDR    | --proxy-listen-addr  | :8081                       |
| advertise_ip       | AGENT_ADVERTISE_IP   | --advertise-ip       | detected                    |
| environment        | CARA_ENVIRONMENT     | --environment        | dev                         |
| base_domain        | CARA_BASE_DOMAIN     | --base-domain        | cara.local                  |
| workers            | AGENT_WORKERS        | --workers            | 4                           |
| stop_timeout       | AGENT_STOP_TIMEOUT   | --stop-timeout       | 10s                         |
| pull_timeout       | AGENT_PULL_TIMEOUT   | --pull-timeout       | 10m                         |
| sweep_interval     | AGENT_SWEEP_INTERVAL | --sweep-interval     | 5m                          |
| restart_backoff    | AGENT_RESTART_BACKOFF | --restart-backoff   | 10s                         |
| system_reserved    | AGENT_SYSTEM_RESERVED | --system-reserved   | none (cpu=0.5,memory=1Gi)   |
| token              | CARA_TOKEN           | --token              | unset                       |
| runtime            | AGENT_RUNTIME        | --runtime            | docker (or fake: hollow)    |
| fake_start_latency | AGENT_FAKE_START_LATENCY | --fake-start-latency | 0s                      |
| fake_failure_rate  | AGENT_FAKE_FAILURE_RATE  | --fake-failure-rate  | 0                       |
| header_timeout     | CARA_HEADER_TIMEOUT  |                      | 30s                         |
| idle_timeout       | CARA_IDLE_TIMEOUT    |                      | 75s                         |
| max_connections    | CARA_MAX_CONNECTIONS |                      | 4096 (API and proxy, each)  |
| ws_max_message_bytes | CARA_WS_MAX_MESSAGE_BYTES |               | 4194304                     |
| proxy_max_body_bytes | CARA_PROXY_MAX_BODY_BYTES |               | 1073741824 (1 GiB)          |
| proxy_trust_forwarded | CARA_PROXY_TRUST_FORWARDED |             | false                       |
| min_host_port      | CARA_MIN_HOST_PORT   |                      | 1024                        |
| low_port_projects  | CARA_LOW_PORT_PROJECTS |                    | none (comma-separated names) |
| default_memory     | CARA_DEFAULT_MEMORY  |                      | unset (bytes, 512Mi, 1Gi)   |
| default_pids_limit | CARA_DEFAULT_PIDS_LIMIT |                   | unset                       |
| join_token         | CARA_JOIN_TOKEN      | --join-token         | unset                       |
| data_dir           | AGENT_DATA_DIR       | --data-dir           | the user data directory     |
| server_ca          | CARA_SERVER_CA       | --server-ca          | the system's CAs            |
| tls_cert_file      | AGENT_TLS_CERT_FILE  | --tls-cert-file      | unset (the API speaks HTTP) |
| tls_key_file       | AGENT_TLS_KEY_FILE   | --tls-key-file       | unset                       |

On its first start the agent joins: it exchanges ``join_token`` (or ``token``, an admin
token such as the server's ``CARA_API_TOKEN``) for the node's own credential and the secret
the server's relay presents to it, and keeps both in ``data_dir`` (``nodes/<node>.json``,
mode 0600). From then on it uses only that credential, and its API (logs, port-forward)
answers only requests carrying that secret. The API listens on the advertise address.

Durations are Go style (``30s``, ``1m30s``, ``500ms``) or seconds. The advertise address,
when unset, is the local address that routes to the server.
``config.yaml`` keys may also be written as the environment names (``DOCKER_HOST:``).
``environment`` and ``base_domain`` complete ingress hosts without a dot:
``host: admin`` serves ``admin.{environment}.{base_domain}`` (seed: ``spec.ingress``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from platformdirs import user_data_dir
from ruamel.yaml import YAML

from caravanserai.api.config import ConfigError, parse_duration
from caravanserai.api.quantities import parse_cpus, parse_memory

# key -> environment variable
ENV_VARS: dict[str, str] = {
    "debug": "DEBUG",
    "server_url": "SERVER_URL",
    "node_name": "NODE_NAME",
    "heartbeat_interval": "HEARTBEAT_INTERVAL",
    "docker_host": "DOCKER_HOST",
    "listen_host": "AGENT_LISTEN_HOST",
    "listen_port": "AGENT_LISTEN_PORT",
    "proxy_listen_addr": "PROXY_LISTEN_ADDR",
    "advertise_ip": "AGENT_ADVERTISE_IP",
    "environment": "CARA_ENVIRONMENT",
    "base_domain": "CARA_BASE_DOMAIN",
    "workers": "AGENT_WORKERS",
    "stop_timeout": "AGENT_STOP_TIMEOUT",
    "pull_timeout": "AGENT_PULL_TIMEOUT",
    "sweep_interval": "AGENT_SWEEP_INTERVAL",
    "restart_backoff": "AGENT_RESTART_BACKOFF",
    "system_reserved": "AGENT_SYSTEM_RESERVED",
    "token": "CARA_TOKEN",
    "runtime": "AGENT_RUNTIME",
    "fake_start_latency": "AGENT_FAKE_START_LATENCY",
    "fake_failure_rate": "AGENT_FAKE_FAILURE_RATE",
    "header_timeout": "CARA_HEADER_TIMEOUT",
    "idle_timeout": "CARA_IDLE_TIMEOUT",
    "max_connections": "CARA_MAX_CONNECTIONS",
    "ws_max_message_bytes": "CARA_WS_MAX_MESSAGE_BYTES",
    "proxy_max_body_bytes": "CARA_PROXY_MAX_BODY_BYTES",
    "proxy_trust_forwarded": "CARA_PROXY_TRUST_FORWARDED",
    "min_host_port": "CARA_MIN_HOST_PORT",
    "low_port_projects": "CARA_LOW_PORT_PROJECTS",
    "default_memory": "CARA_DEFAULT_MEMORY",
    "default_pids_limit": "CARA_DEFAULT_PIDS_LIMIT",
    "join_token": "CARA_JOIN_TOKEN",
    "data_dir": "AGENT_DATA_DIR",
    "server_ca": "CARA_SERVER_CA",
    "tls_cert_file": "AGENT_TLS_CERT_FILE",
    "tls_key_file": "AGENT_TLS_KEY_FILE",
}

def parse_size_setting(value: object, key: str) -> int | None:
    """Bytes from a size (``512Mi``, ``1Gi``, ``1g``, a plain number, as a service's
    memory limit is written); empty means unset."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        size = int(parse_memory(text))
    except ValueError:
        size = 0
    if size <= 0:
        raise ConfigError(f"{key}: expected a size such as 512Mi, 1Gi or 1073741824, got {text!r}")
    return size


_POSITIVE_INTS = (
    "workers", "max_connections", "ws_max_message_bytes", "proxy_max_body_bytes",
    "default_pids_limit",
)

def parse_reserved(value: object) -> dict[str, str]:
    """``cpu=0.5,memory=1Gi`` (either part optional) as quantities checked now."""
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        text = "" if value is None else str(value).strip()
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, qty = part.partition("=")
            if not sep:
                raise ConfigError(f"system_reserved: expected cpu=N,memory=SIZE, got {part!r}")
            pairs.append((key.strip(), qty.strip()))
    out: dict[str, str] = {}
    for key, qty in pairs:
        try:
            if key == "cpu":
                parse_cpus(qty)
            elif key == "memory":
                parse_memory(qty)
            else:
                raise ConfigError(f"system_reserved: unknown resource {key!r} (cpu, memory)")
        except ValueError as exc:
            raise ConfigError(f"system_reserved: {key}: {exc}") from None
        out[key] = qty
    return out


def parse_bool(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def parse_port(value: object, key: str) -> int:
    try:
        port = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{key}: expected a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} out of range 0-65535")
    return port


def parse_listen_addr(value: str, key: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[::1]:port`` → (host, port)."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"{key}: expected [host]:port, got {value!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "", text
    return host or "0.0.0.0", parse_port(port, key)


@dataclass(frozen=True)
class AgentConfig:
    debug: bool = False
    server_url: str = "http://localhost:8080"
    node_name: str = field(default_factory=socket.gethostname)
    heartbeat_interval: float = 30.0
    docker_host: str = "unix:///var/run/docker.sock"
    # None: the advertise address (the only one the server connects to).
    listen_host: str | None = None
    listen_port: int = 9090
    proxy_listen_addr: str = ":8081"
    advertise_ip: str | None = None
    environment: str = "dev"
    base_domain: str = "cara.local"
    workers: int = 4
    stop_timeout: float = 10.0
    pull_timeout: float = 600.0
    sweep_interval: float = 300.0
    # First CrashLoopBackOff delay; it doubles up to 30x, and resets after 60x of running
    # (10s → 5 min cap, 10 min reset, as Kubernetes). Lower only to test.
    restart_backoff: float = 10.0
    # Kept from what projects may request (allocatable = capacity - reserved).
    system_reserved: dict[str, str] = field(default_factory=dict)
    token: str | None = field(default=None, repr=False)
    # "fake": a hollow node (agent/fake_runtime.py) for simulating large clusters.
    runtime: str = "docker"
    fake_start_latency: float = 0.0
    fake_failure_rate: float = 0.0
    # Connection limits of the agent API and the ingress proxy (caravanserai.connections).
    header_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 4096
    ws_max_message_bytes: int = 4 * 1024 * 1024
    # The proxy streams bodies; a request body past this is a 413 (nginx: client_max_body_size).
    proxy_max_body_bytes: int = 1024 * 1024 * 1024
    # Trust X-Forwarded-For/-Host/-Proto from the client: only behind a front proxy that sets
    # them, otherwise any client could claim any address or host.
    proxy_trust_forwarded: bool = False
    # Host ports below this are refused (PortConflict) unless the project is listed.
    min_host_port: int = 1024
    low_port_projects: tuple[str, ...] = ()
    # Limits put on every container when set (bytes; number of processes).
    default_memory: int | None = None
    default_pids_limit: int | None = None
    join_token: str | None = field(default=None, repr=False)
    data_dir: Path = field(default_factory=lambda: Path(user_data_dir("cara-agent")))
    server_ca: str | None = None
    # The agent API over HTTPS (the server then needs CARA_AGENT_CA to trust it).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @property
    def proxy_host(self) -> str:
        return parse_listen_addr(self.proxy_listen_addr, "proxy_listen_addr")[0]

    @property
    def proxy_port(self) -> int:
        return parse_listen_addr(self.proxy_listen_addr, "proxy_listen_addr")[1]

    def advertise_address(self) -> str:
        """The configured advertise IP, or the local address that routes to the server."""
        return self.advertise_ip or detect_advertise_ip(self.server_url)


def _convert(key: str, value: Any) -> Any:
    """Turn a raw value (string from env/.env, typed from YAML) into the field's type."""
    if key in ("debug", "proxy_trust_forwarded"):
        return parse_bool(value, key)
    if key == "runtime":
        text = str(value).strip().lower()
        if text not in ("docker", "fake"):
            raise ConfigError(f"runtime: expected docker or fake, got {value!r}")
        return text
    if key == "fake_failure_rate":
        try:
            rate = float(str(value).strip())
        except ValueError:
            raise ConfigError(f"fake_failure_rate: expected a number, got {value!r}") from None
        if not 0.0 <= rate <= 1.0:
            raise ConfigError("fake_failure_rate: must be between 0 and 1")
        return rate
    if key == "system_reserved":
        return parse_reserved(value)
    if key in (
        "heartbeat_interval", "stop_timeout", "pull_timeout", "sweep_interval",
        "restart_backoff", "fake_start_latency", "header_timeout", "idle_timeout",
    ):
        return parse_duration(value, key)
    if key == "listen_port":
        return parse_port(value, key)
    if key == "min_host_port":
        return parse_port(value, key)
    if key == "default_memory":
        return parse_size_setting(value, key)
    if key == "low_port_projects":
        if isinstance(value, list | tuple):
            return tuple(str(v).strip() for v in value if str(v).strip())
        return tuple(p.strip() for p in str(value or "").split(",") if p.strip())
    if key == "default_pids_limit" and (value is None or not str(value).strip()):
        return None
    if key in _POSITIVE_INTS:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if number < 1:
            raise ConfigError(f"{key}: must be at least 1")
        return number
    text = "" if value is None else str(value).strip()
    if key in ("advertise_ip", "token", "join_token", "server_ca", "listen_host",
               "tls_cert_file", "tls_key_file"):
        return text or None
    if key == "data_dir":
        if not text:
            raise ConfigError("data_dir: must not be empty")
        return Path(text).expanduser()
    if not text:
        raise ConfigError(f"{key}: must not be empty")
    if key == "proxy_listen_addr":
        parse_listen_addr(text, key)
    if key == "server_url":
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"server_url: expected http(s)://host[:port], got {text!r}")
        text = text.rstrip("/")
    return text


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = YAML(typ="safe").load(path.read_text())
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of settings")
    by_env = {var: key for key, var in ENV_VARS.items()}
    out: dict[str, Any] = {}
    unknown = []
    for raw_key, value in data.items():
        key = by_env.get(str(raw_key), str(raw_key))  # DOCKER_HOST: works as docker_host:
        if key not in ENV_VARS:
            unknown.append(str(raw_key))
        out[key] = value
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return out


def _from_env(env: Mapping[str, str | None]) -> dict[str, Any]:
    return {key: env[var] for key, var in ENV_VARS.items() if env.get(var) is not None}


def load_config(
    *,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    env_file: Path | None = None,
) -> AgentConfig:
    """Merge every source, highest last: defaults, YAML, ``.env``, environment, flags.

    Flags whose value is None were not given. ``.env`` is read, never exported.
    """
    layers: list[dict[str, Any]] = [
        read_yaml(config_file or Path("config.yaml")),
        _from_env(dotenv_values(env_file or Path(".env"))),
        _from_env(os.environ if environ is None else environ),
        {k: v for k, v in (flags or {}).items() if v is not None},
    ]
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    names = {f.name for f in fields(AgentConfig)}
    values = {k: _convert(k, v) for k, v in merged.items() if k in names}
    return replace(AgentConfig(), **values)


def detect_advertise_ip(server_url: str) -> str:
    """The local address the kernel would use to reach the server (no packet is sent).

    A server on loopback gives 127.0.0.1, which is right for a one-machine setup.
    """
    parts = urlsplit(server_url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        infos = []
    for family, _type, _proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect(sockaddr)
                address = str(sock.getsockname()[0])
        except OSError:
            continue
        if address and address not in ("0.0.0.0", "::"):
            return address
    return "127.0.0.1"
