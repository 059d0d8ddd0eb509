"""``-o jsonpath=TEMPLATE``, ``-o custom-columns=SPEC`` and ``--sort-by=PATH``, as kubectl.

Paths are JSONPath as kubectl writes them (``.metadata.name``, ``.items[*].spec.services[0]``,
filters ``[?(@.type=="Ready")]``), evaluated by ``jsonpath-ng`` (its extended parser, for
filters) on the object's JSON form. A jsonpath template is text with ``{PATH}`` fields,
string literals ``{"\\n"}`` and ``{range PATH}...{end}``; like kubectl it applies to the List
for ``get`` without a name and to the object itself for ``get KIND NAME``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from cli.formatting import NONE, Table

_FIELD = re.compile(r"\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}")


class TemplateError(ValueError):
    """A template or path that cannot be parsed (one line, for the error message)."""


@lru_cache(maxsize=64)
def _compiled(path: str) -> Any:
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse

    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text.startswith("$"):
        text = "$" + (text if text.startswith((".", "[")) else "." + text)
    try:
        return parse(text)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise TemplateError(f"bad JSONPath {path!r}: {exc}") from None


def values(path: str, data: Any) -> list[Any]:
    """Every value ``path`` selects in ``data`` (JSON form)."""
    return [m.value for m in _compiled(path).find(data)]


def text_of(value: Any) -> str:
    """A value as kubectl prints it: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("field", expr) in order."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _FIELD.finditer(template):
        if m.start() > pos:
            out.append(("text", template[pos:m.start()]))
        out.append(("field", m.group(1).strip()))
        pos = m.end()
    if pos < len(template):
        out.append(("text", template[pos:]))
    if "{" in "".join(t for kind, t in out if kind == "text"):
        raise TemplateError(f"unclosed {{ in template {template!r}")
    return out


def render_jsonpath(template: str, data: Any) -> str:
    tokens = _tokens(template)
    out, end = _render(tokens, 0, data)
    if end != len(tokens):
        raise TemplateError("{end} without {range ...}")
    return out


def _render(tokens: list[tuple[str, str]], i: int, data: Any) -> tuple[str, int]:
    parts: list[str] = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            parts.append(value)
        elif value == "end":
            return "".join(parts), i
        elif value.startswith("range "):
            items = values(value[len("range "):], data)
            body_end = _matching_end(tokens, i + 1)
            for item in items:
                parts.append(_render(tokens, i + 1, item)[0])
            i = body_end
        elif value.startswith('"'):
            try:
                parts.append(json.loads(value, strict=False))
            except ValueError:
                raise TemplateError(f"bad string literal {value}") from None
        else:
            parts.append(" ".join(text_of(v) for v in values(value, data)))
        i += 1
    return "".join(parts), i


def _matching_end(tokens: list[tuple[str, str]], i: int) -> int:
    depth = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "field" and value.startswith("range "):
            depth += 1
        elif kind == "field" and value == "end":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise TemplateError("{range ...} without {end}")


def parse_columns(spec: str) -> list[tuple[str, str]]:
    """``NAME:.metadata.name,PHASE:.status.phase`` -> [(header, path)]."""
    columns = []
    for part in spec.split(","):
        header, sep, path = part.partition(":")
        if not sep or not header.strip() or not path.strip():
            raise TemplateError(
                f"custom-columns: {part!r} is not HEADER:PATH (e.g. NAME:.metadata.name)"
            )
        _compiled(path.strip())
        columns.append((header.strip(), path.strip()))
    return columns


def column_rows(columns: Sequence[tuple[str, str]], items: Sequence[Any]) -> list[list[str]]:
    rows = []
    for item in items:
        row = []
        for _, path in columns:
            found = values(path, item)
            row.append(",".join(text_of(v) for v in found) if found else NONE)
        rows.append(row)
    return rows


def sort_key(path: str) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    """Objects sorted by the first value of ``path``; numbers as numbers, missing last."""
    _compiled(path)

    def key(obj: Mapping[str, Any]) -> tuple[int, Any]:
        found = values(path, obj)
        if not found or found[0] is None:
            return (2, "")
        v = found[0]
        if isinstance(v, bool):
            return (1, str(v))
        if isinstance(v, int | float):
            return (0, v)
        return (1, text_of(v))

    return key


class TemplatePrinter:
    """``get`` with ``-o jsonpath=...`` or ``-o custom-columns=...``."""

    def __init__(self, spec: str, echo: Callable[[str], None]) -> None:
        kind, _, body = spec.partition("=")
        self.kind = kind
        self.echo = echo
        self.body = body
        self.columns = parse_columns(body) if kind == "custom-columns" else []
        if kind == "jsonpath":
            _tokens(body)
        self.table = Table([h for h, _ in self.columns]) if self.columns else None
        self._header = False

    def print_list(self, list_doc: Mapping[str, Any]) -> None:
        if self.table is not None:
            self._rows(list_doc.get("items") or [])
        else:
            self.echo(render_jsonpath(self.body, list_doc))

    def print_object(self, obj: Mapping[str, Any]) -> None:
        if self.table is not None:
            self._rows([obj])
        else:
            self.echo(render_jsonpath(self.body, obj))

    def _rows(self, items: Sequence[Any]) -> None:
        assert self.table is not None and self.columns
        for line in self.table.render(column_rows(self.columns, items), header=not self._header):
            self.echo(line)
        self._header = True
