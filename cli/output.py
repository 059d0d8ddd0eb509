"""The names of the output formats (``-o``), without the printers that implement them.

Kept apart from :mod:`cli.printers` so the global options can offer the choices without
importing YAML and the API models (``caractrl --help`` must start fast).
"""

from __future__ import annotations

from enum import StrEnum


class OutputFormat(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    NAME = "name"


OUTPUT_FORMATS = tuple(f.value for f in OutputFormat)
