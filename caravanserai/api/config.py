"""What every program's configuration shares: the one ConfigError and the one duration
parser (``cara-server``, ``cara-agent``, ``caractrl`` and the controllers all accept the
same forms)."""

from __future__ import annotations

import math
import re

__all__ = ["ConfigError", "parse_duration"]


class ConfigError(ValueError):
    """A configuration value is missing or malformed; told to the user as one line that
    names the setting (never a traceback). ``reason`` is the message without the
    setting's name, for callers that name it their own way."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


# Go's time.ParseDuration units, as kubectl/Nomad users write them: ``1h30m``, ``500ms``.
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_EXAMPLES = "e.g. 500ms, 30s, 1m, 1h30m or plain seconds"


def parse_duration(value: object, key: str = "duration", *, allow_zero: bool = False) -> float:
    """Seconds from ``500ms``, ``30s``, ``1m``, ``1h30m`` (units combine, Go style) or a
    plain number of seconds (``90``, ``1.5``).

    Must be positive (0 too with ``allow_zero``), finite. Raises :class:`ConfigError`
    naming ``key``.
    """
    if isinstance(value, bool):
        reason = f"{value!r} is not a duration ({_EXAMPLES})"
        raise ConfigError(f"{key}: {reason}", reason=reason)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            seconds, pos = 0.0, 0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if not text or pos != len(text):
                reason = f"{value!r} is not a duration ({_EXAMPLES})"
                raise ConfigError(f"{key}: {reason}", reason=reason) from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        need = "0 or more" if allow_zero else "a positive"
        reason = f"{value!r} must be {need} number of seconds or a duration ({_EXAMPLES})"
        raise ConfigError(f"{key}: {reason}", reason=reason)
    return seconds
