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
    # -o jsonpath=TEMPLATE / -o custom-columns=SPEC (cli/templates.py); not a choice itself.
    TEMPLATE = "template"


OUTPUT_FORMATS = tuple(f.value for f in OutputFormat if f is not OutputFormat.TEMPLATE)
TEMPLATE_PREFIXES = ("jsonpath=", "custom-columns=")


def is_template(value: str) -> bool:
    return value.startswith(TEMPLATE_PREFIXES)
