"""Output formats of ``get`` and friends: table, wide, json, yaml, name.

Objects are printed in their wire form (camelCase, unset optionals omitted), the same JSON
the server sent. JSON uses a 2-space indent; YAML is block style with sequences indented
under their key, the way the seed manifests are written, so ``get -o yaml`` output can be
edited and applied again.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ruamel.yaml import YAML

from caravanserai.api import API_VERSION, Node, Project
from cli.formatting import Table
from cli.output import OUTPUT_FORMATS, OutputFormat
from cli.tables import NODE_COLUMNS, PROJECT_COLUMNS, Columns

__all__ = [
    "OUTPUT_FORMATS", "OutputFormat", "ResourcePrinter", "columns_for", "dump_json", "dump_yaml",
    "kind_noun", "list_document", "object_name", "wire",
]

Obj = Mapping[str, Any]
Echo = Callable[[str], None]


# The widest value of enumerated columns: MODIFIED, Terminating.
_WATCH_WIDTHS = {"EVENT": len("MODIFIED"), "PHASE": len("Terminating")}


def wire(model: Project | Node) -> dict[str, Any]:
    """The JSON form of a model, as the server serialises it."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _yaml() -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never fold long strings (images, messages) across lines
    return yaml


def dump_yaml(data: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(_plain(data), buf)
    return buf.getvalue()


def _plain(data: Any) -> Any:
    # ruamel's round-trip dumper wants builtin containers, not Mapping views.
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_plain(v) for v in data]
    return data


def kind_noun(kind: str) -> str:
    """``Project`` -> ``project``: how messages and ``-o name`` refer to a kind."""
    return kind.lower()


def object_name(obj: Obj) -> str:
    return f"{kind_noun(str(obj.get('kind', '')))}/{obj.get('metadata', {}).get('name', '')}"


def list_document(kind: str, items: Sequence[Obj], resource_version: str = "") -> dict[str, Any]:
    """A ``ProjectList`` / ``NodeList`` as the server's list route returns it."""
    return {
        "apiVersion": API_VERSION,
        "kind": f"{kind}List",
        "metadata": {"resourceVersion": resource_version},
        "items": list(items),
    }


def columns_for(kind: str) -> Columns:
    return PROJECT_COLUMNS if kind == "Project" else NODE_COLUMNS


class ResourcePrinter:
    """Prints objects of one kind in one format; keeps state across ``get -w`` events."""

    def __init__(
        self,
        kind: str,
        fmt: OutputFormat,
        echo: Echo,
        *,
        watch_events: bool = False,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        project_counts: Callable[[], Mapping[str, int] | None] | None = None,
    ) -> None:
        self.kind = kind
        self.fmt = fmt
        self.echo = echo
        self.now = now
        self.watch_events = watch_events
        self.project_counts = project_counts
        self.columns = columns_for(kind)
        wide = fmt is OutputFormat.WIDE
        headers = self.columns.header(wide)
        self.table = Table((["EVENT"] if watch_events else []) + headers)
        self._header_printed = False
        self._yaml_docs = 0

    def presize_for_watch(self) -> None:
        """Rows printed later by ``get -w`` should line up with the header printed first:
        columns whose values are a known set start as wide as their widest value."""
        for i, header in enumerate(self.table.headers):
            widest = _WATCH_WIDTHS.get(header)
            if widest:
                self.table.widths[i] = max(self.table.widths[i], widest)

    @property
    def tabular(self) -> bool:
        return self.fmt in (OutputFormat.TABLE, OutputFormat.WIDE)

    def _rows(self, models: Iterable[Project | Node], event: str | None) -> list[list[str]]:
        now = self.now()
        wide = self.fmt is OutputFormat.WIDE
        counts = self.project_counts() if (wide and self.project_counts) else None
        rows = []
        for m in models:
            row = self.columns.row(m, now, wide, counts)
            rows.append(([event or ""] if self.watch_events else []) + row)
        return rows

    def _table(self, models: Sequence[Project | Node], event: str | None = None) -> None:
        lines = self.table.render(self._rows(models, event), header=not self._header_printed)
        self._header_printed = True
        for line in lines:
            self.echo(line)

    def print_one(self, model: Project | Node) -> None:
        """``get KIND NAME``: the object itself (not a list) in json/yaml."""
        self.print_many([model], as_list=False)

    def print_many(
        self,
        models: Sequence[Project | Node],
        *,
        as_list: bool = True,
        resource_version: str = "",
    ) -> None:
        if self.tabular:
            if models:
                self._table(models)
            return
        if self.fmt is OutputFormat.NAME:
            for m in models:
                self.echo(object_name(wire(m)))
            return
        if as_list:
            doc: Any = list_document(self.kind, [wire(m) for m in models], resource_version)
        else:
            doc = wire(models[0])
        self._emit(doc)

    def print_event(self, model: Project | Node, event: str) -> None:
        """One watch event: a new row, or the object again in json/yaml/name."""
        self.print_events([model], event)

    def print_events(self, models: Sequence[Project | Node], event: str) -> None:
        """Several events at once (the initial list of ``get -w``): as one table, so the
        header's columns fit every one of them."""
        if self.tabular:
            if models:
                self._table(models, event)
            return
        for model in models:
            if self.fmt is OutputFormat.NAME:
                self.echo(object_name(wire(model)))
            else:
                self._emit(wire(model))

    def _emit(self, doc: Any) -> None:
        if self.fmt is OutputFormat.JSON:
            self.echo(dump_json(doc))
        else:
            # Several YAML documents (watch events) form one valid stream.
            if self._yaml_docs:
                self.echo("---")
            self._yaml_docs += 1
            self.echo(dump_yaml(doc).rstrip("\n"))
