"""Settings of the built-in controllers: timeouts and worker counts.

Each value comes from, in order: the controller's ``ctx.config`` mapping (what the manager
or a standalone program passes), the environment, the default below. Durations accept
plain seconds (``90``, ``1.5``) or a unit suffix (``90s``, ``3m``, ``1h``).

| setting | environment | default | used by |
|---|---|---|---|
| ``heartbeat_timeout`` | ``CARA_HEARTBEAT_TIMEOUT`` | 90 s | node-health |
| ``running_grace`` | ``CARA_RUNNING_GRACE`` | 180 s | rescheduler |
| ``terminating_timeout`` | ``CARA_TERMINATING_TIMEOUT`` | 600 s | termination |
| ``event_ttl`` | ``CARA_EVENT_TTL`` | 1 h | event-ttl (after the last occurrence) |
| ``workers`` | ``CARA_<NAME>_WORKERS`` | 16 scheduler, 4 others | all |

``<NAME>`` is the controller's name in capitals with ``_`` for ``-``:
``CARA_SCHEDULER_WORKERS``, ``CARA_NODE_HEALTH_WORKERS``.

The defaults are the original's (REFERENCE §7): 90 s is three missed 30 s heartbeats, the
grace period is twice that, and a Terminating project on a dead node is given ten minutes
for its node to come back before it is forgotten.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from caravanserai.api.config import ConfigError, parse_duration

__all__ = [
    "ControllerSettings",
    "SettingsError",
    "format_duration",
    "load_settings",
    "parse_duration",
]

V = TypeVar("V")

# The scheduler's workers only decide (a heap pop) and then wait for their binding: its
# batches are as large as the decisions made while the previous one was on its way, so it
# keeps many in flight; the others act on a handful of objects at a time.
_DEFAULT_WORKERS = {"scheduler": 128}
_OTHER_WORKERS = 4



SettingsError = ConfigError
"""A controller setting has an invalid value (the message names it and its source): the
one ConfigError of every program, under the name this module always exported."""


def format_duration(seconds: float) -> str:
    """``180`` → ``3m``, ``90`` → ``1m30s``, ``1.5`` → ``1.5s`` (for messages)."""
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        (f"{hours}h" if hours else "")
        + (f"{minutes}m" if minutes else "")
        + (f"{secs}s" if secs else "")
    )


def _parse_workers(value: str | float) -> int:
    workers = int(value)
    if workers < 1:
        raise ValueError(f"{value!r} must be at least 1")
    return workers


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Resolved settings of one controller (seconds and counts)."""

    heartbeat_timeout: float = 90.0
    running_grace: float = 180.0
    terminating_timeout: float = 600.0
    workers: int = _OTHER_WORKERS
    event_ttl: float = 3600.0


def _resolve(
    key: str,
    env: str,
    default: V,
    parse: Callable[[Any], V],
    config: Mapping[str, Any],
    environ: Mapping[str, str],
) -> V:
    if key in config and config[key] is not None:
        raw, source = config[key], f"config key {key!r}"
    elif environ.get(env, "").strip():
        raw, source = environ[env], env
    else:
        return default
    try:
        return parse(raw)
    except (TypeError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(f"{source}: {reason}") from None


def load_settings(
    name: str, config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> ControllerSettings:
    """The settings of controller ``name`` from its config, the environment and defaults."""
    config = config or {}
    environ = os.environ if environ is None else environ
    workers_env = "CARA_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_WORKERS"
    return ControllerSettings(
        heartbeat_timeout=_resolve(
            "heartbeat_timeout", "CARA_HEARTBEAT_TIMEOUT", 90.0, parse_duration, config, environ
        ),
        running_grace=_resolve(
            "running_grace", "CARA_RUNNING_GRACE", 180.0, parse_duration, config, environ
        ),
        terminating_timeout=_resolve(
            "terminating_timeout",
            "CARA_TERMINATING_TIMEOUT",
            600.0,
            parse_duration,
            config,
            environ,
        ),
        event_ttl=_resolve(
            "event_ttl", "CARA_EVENT_TTL", 3600.0, parse_duration, config, environ
        ),
        workers=_resolve(
            "workers",
            workers_env,
            _DEFAULT_WORKERS.get(name, _OTHER_WORKERS),
            _parse_workers,
            config,
            environ,
        ),
    )
