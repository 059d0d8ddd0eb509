"""Resource quantities and Compose durations: one parser each, shared by API, agent and CLI.

Memory accepts both families users bring along: Compose/Docker (``512m``, ``1g``, ``1.5gb``,
binary multiples) and Kubernetes (``512Mi``, ``1Gi`` binary; ``500M``, ``1G`` decimal; plain
bytes). CPUs accept Compose's decimal (``0.5``, ``"2"``) and Kubernetes millicores
(``"500m"``). Durations are Compose's (``1m30s``, ``10s``, ``500ms``, ``1h``).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Kubernetes: Ki/Mi/Gi/Ti binary, k/M/G/T decimal. Docker/Compose: b/k/m/g (and kb/mb/gb)
# are all binary (docker run -m 512m is 512 MiB). Lower-case single letters follow Docker.
_MEMORY_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
    "t": 1024**4, "tb": 1024**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
    "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4,
}
# Blanks are spaces and tabs only, so that the patterns below (published in the JSON Schemas
# and the OpenAPI document, where ECMAScript's ``\s`` differs from Python's) say exactly
# what the parsers take.
_QUANTITY_RE = re.compile(r"^[ \t]*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)[ \t]*([A-Za-z]*)[ \t]*$")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_NUMBER = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
# Every unit _MEMORY_UNITS knows, in any letter case (the parser falls back to lower case).
MEMORY_PATTERN = rf"[ \t]*{_NUMBER}[ \t]*(?:[bB]|[kKmMgGtT](?:[bB]|[iI])?)?[ \t]*"
CPUS_PATTERN = rf"[ \t]*{_NUMBER}[ \t]*m?[ \t]*"
DURATION_PATTERN = r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+"
_DURATION_UNITS = {
    "ns": Decimal("1e-9"), "us": Decimal("1e-6"), "µs": Decimal("1e-6"),
    "ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
}

MEMORY_HINT = 'a size such as "512Mi", "1Gi", "512m" or "1g"'
CPUS_HINT = 'a number of CPUs such as 0.5, "2" or "500m"'
DURATION_HINT = 'a duration such as "10s", "1m30s" or "500ms"'


def parse_memory(value: object) -> int:
    """Bytes of a memory quantity; ValueError with a readable message when malformed."""
    if isinstance(value, bool):
        raise ValueError(f"must be {MEMORY_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be {MEMORY_HINT}")
    match = _QUANTITY_RE.match(value)
    if not match:
        raise ValueError(f"must be {MEMORY_HINT}")
    number, unit = match.groups()
    factor = _MEMORY_UNITS.get(unit)
    if factor is None:
        factor = _MEMORY_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown unit {unit!r}: must be {MEMORY_HINT}")
    return int(Decimal(number) * factor)


def parse_cpus(value: object) -> float:
    """CPUs (``0.5``, ``"2"``, ``"500m"``) as a float; ValueError when malformed."""
    if isinstance(value, bool):
        raise ValueError(f"must be {CPUS_HINT}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"must be {CPUS_HINT}")
    match = _QUANTITY_RE.match(value)
    if not match or match.group(2) not in ("", "m"):
        raise ValueError(f"must be {CPUS_HINT}")
    number = Decimal(match.group(1))
    return float(number / 1000 if match.group(2) == "m" else number)


def parse_duration(value: object) -> float:
    """Seconds of a Compose duration (``"1m30s"``); ValueError when malformed."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be {DURATION_HINT}")
    pos = 0
    total = Decimal(0)
    for match in _DURATION_RE.finditer(value):
        if match.start() != pos:
            break
        try:
            total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        except InvalidOperation:  # pragma: no cover - the regex admits only numbers
            break
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"must be {DURATION_HINT}")
    return float(total)


def format_memory(value: int) -> str:
    """The shortest exact binary form (``512Mi``, ``2Gi``), for tables and node status."""
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def format_cpus(value: float) -> str:
    """``2``, ``0.5``, ``1.25`` — the Compose form."""
    return f"{value:g}"
