"""Reading manifests for ``apply -f`` and ``delete -f``: files, directories, stdin.

Every source may hold several documents: YAML separated by ``---``, one JSON value, or
several concatenated JSON values (what ``get -w -o json`` prints). A ``List`` /
``ProjectList`` / ``NodeList`` document contributes its items, so ``get -o yaml > all.yaml``
can be applied back. Every document is validated before anything is sent: one bad document
means nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from caravanserai.api import KINDS, CaravanseraiError, FieldError, Node, Project
from caravanserai.api.validation import parse_resource

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
_LIST_KINDS = {"List"} | {f"{k}List" for k in KINDS}


class ManifestError(Exception):
    """Manifests could not be read or are invalid; ``lines`` lists every problem."""

    def __init__(self, summary: str, lines: Sequence[str] = ()) -> None:
        super().__init__(summary)
        self.summary = summary
        self.lines = list(lines)


@dataclass(frozen=True)
class Document:
    """One manifest document and where it came from (for error messages)."""

    source: str  # "project.yaml", "<stdin>"
    index: int  # 1-based position in its source
    data: Any

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.index})"


@dataclass(frozen=True)
class Manifest:
    """A validated document."""

    document: Document
    resource: Project | Node

    @property
    def kind(self) -> str:
        return self.resource.kind

    @property
    def name(self) -> str:
        return self.resource.metadata.name


def describe_ref(kind: str, name: str) -> str:
    """``project "my-project"``: how every message names an object (as the seeds do)."""
    return f'{kind.lower()} "{name}"'


def _jsonable(value: Any) -> Any:
    # YAML has timestamps and dates, JSON (and the API's strict validation) only strings.
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _yaml_error(source: str, exc: YAMLError, text: str = "") -> ManifestError:
    if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = (exc.problem or "syntax error").replace("'<stream end>'", "the end of the file")
        # The parser reports "the end of the stream" one line past the last one (line 9 of
        # an 8-line file): say where the construct that was left open started instead.
        if mark.line >= len(text.splitlines()) and text:
            where = "at the end of the file"
            ctx = exc.context_mark
            if exc.context and ctx is not None:
                what += f" ({exc.context} started at line {ctx.line + 1}, column {ctx.column + 1})"
        else:
            where = f"at line {mark.line + 1}, column {mark.column + 1}"
        return ManifestError(f"{source}: invalid YAML {where}: {what}")
    return ManifestError(f"{source}: invalid YAML: {exc}")


def _json_documents(source: str, text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        docs.append(value)


def parse_text(source: str, text: str) -> list[Any]:
    """The documents of one source, in order; empty YAML documents are skipped."""
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith(("{", "[")):
        return _json_documents(source, text)
    try:
        docs = list(YAML(typ="safe", pure=True).load_all(text))
    except YAMLError as exc:
        raise _yaml_error(source, exc, text) from None
    return [_jsonable(d) for d in docs if d is not None]


def _expand(source: str, docs: Iterable[Any]) -> Iterator[Document]:
    index = 0
    for doc in docs:
        items = (
            doc.get("items")
            if isinstance(doc, dict) and doc.get("kind") in _LIST_KINDS
            else None
        )
        for item in items if isinstance(items, list) else [doc]:
            index += 1
            yield Document(source, index, item)


def _directory_files(path: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES
    )


def read_documents(
    filenames: Sequence[str], stdin: TextIO, *, recursive: bool = False
) -> list[Document]:
    """All documents of every ``-f`` argument, in the order given (directories sorted)."""
    documents: list[Document] = []
    for name in filenames:
        if name == STDIN:
            documents.extend(_expand("<stdin>", parse_text("<stdin>", stdin.read())))
            continue
        path = Path(name).expanduser()
        if path.is_dir():
            files = _directory_files(path, recursive)
            if not files:
                raise ManifestError(
                    f"{name}: no manifest files ({', '.join(MANIFEST_SUFFIXES)}) in directory"
                )
        elif path.exists():
            files = [path]
        else:
            raise ManifestError(f"{name}: no such file or directory")
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ManifestError(f"{file}: cannot read: {exc}") from None
            documents.extend(_expand(str(file), parse_text(str(file), text)))
    if not documents:
        raise ManifestError("no objects passed to apply (the input is empty)")
    return documents


def _label(doc: Document) -> str:
    data = doc.data if isinstance(doc.data, dict) else {}
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(kind, str) and kind in KINDS and isinstance(name, str) and name:
        return describe_ref(kind, name)
    return doc.where


def validate_documents(documents: Sequence[Document]) -> list[Manifest]:
    """Parse and validate every document; ManifestError lists every field error of all."""
    manifests: list[Manifest] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], Document] = {}
    for doc in documents:
        label = _label(doc)
        data = doc.data
        if not isinstance(data, dict):
            problems.append(f"{doc.where}: a manifest must be a mapping (an object)")
            continue
        kind = data.get("kind")
        if kind not in KINDS:
            expected = " or ".join(KINDS)
            problems.append(
                f"{doc.where}: kind: must be {expected}"
                if kind is None
                else f'{doc.where}: kind: unsupported kind "{kind}" (expected {expected})'
            )
            continue
        try:
            resource = parse_resource(data)
        except CaravanseraiError as exc:
            errors = exc.errors or [FieldError(field="", message=exc.detail or str(exc))]
            problems.extend(f"{label}: {err}" for err in errors)
            continue
        key = (resource.kind, resource.metadata.name)
        if key in seen:
            problems.append(
                f"{label}: defined twice ({seen[key].where} and {doc.where})"
            )
            continue
        seen[key] = doc
        manifests.append(Manifest(doc, resource))
    if problems:
        count = len(problems)
        raise ManifestError(
            f"invalid manifest{'s' if len(documents) > 1 else ''}: {count} error"
            f"{'s' if count != 1 else ''}; nothing was applied",
            problems,
        )
    return manifests
