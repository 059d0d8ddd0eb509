"""Reading and validating manifests for `caractrl apply -f`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cli.manifests import ManifestError, parse_text, read_documents, validate_documents

SEED = """\
apiVersion: caravanserai/v1
kind: Project
metadata:
  name: my-project
spec:
  services:
    - name: web
      image: nginx:alpine
      env:
        - name: APP_ENV
          value: production
  volumes: []
"""

NODE = """\
apiVersion: caravanserai/v1
kind: Node
metadata:
  name: node-01
spec:
  hostname: node-01
"""


def test_seed_manifest_is_valid(tmp_path: Path) -> None:
    (tmp_path / "project.yaml").write_text(SEED)
    [m] = validate_documents(read_documents([str(tmp_path / "project.yaml")], io.StringIO()))
    assert (m.kind, m.name) == ("Project", "my-project")


def test_multi_document_yaml_and_stdin() -> None:
    docs = read_documents(["-"], io.StringIO(SEED + "---\n" + NODE + "---\n"))
    assert [(d.source, d.index) for d in docs] == [("<stdin>", 1), ("<stdin>", 2)]
    assert [m.kind for m in validate_documents(docs)] == ["Project", "Node"]


def test_directory_sorted_and_recursive(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(SEED)
    (tmp_path / "a.yml").write_text(NODE)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.json").write_text(
        json.dumps({"apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": "n2"}})
    )
    flat = read_documents([str(tmp_path)], io.StringIO())
    assert [Path(d.source).name for d in flat] == ["a.yml", "b.yaml"]
    deep = read_documents([str(tmp_path)], io.StringIO(), recursive=True)
    assert [Path(d.source).name for d in deep] == ["a.yml", "b.yaml", "c.json"]


def test_json_concatenated_and_lists() -> None:
    one = {"apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": "a"}}
    two = {"apiVersion": "caravanserai/v1", "kind": "Node", "metadata": {"name": "b"}}
    assert parse_text("x.json", json.dumps(one) + "\n" + json.dumps(two)) == [one, two]
    listed = {
        "apiVersion": "caravanserai/v1",
        "kind": "NodeList",
        "items": [one, two],
        "metadata": {"resourceVersion": "3"},
    }
    docs = read_documents(["-"], io.StringIO(json.dumps(listed)))
    assert [d.data["metadata"]["name"] for d in docs] == ["a", "b"]


def test_yaml_timestamps_become_rfc3339_strings() -> None:
    text = SEED.replace("  volumes: []", "  volumes: []\n  expireAt: 2026-04-07T00:00:00Z")
    [doc] = parse_text("p.yaml", text)
    assert doc["spec"]["expireAt"] == "2026-04-07T00:00:00Z"
    [m] = validate_documents(read_documents(["-"], io.StringIO(text)))
    assert m.resource.spec.expire_at is not None  # type: ignore[union-attr]


def test_syntax_errors_name_the_place() -> None:
    with pytest.raises(ManifestError, match=r"p.yaml: invalid YAML at line 2, column \d+"):
        parse_text("p.yaml", "a: [1\nb: 2\n")
    # An unclosed bracket is found at the end of the stream, one line past the last: the
    # message names the end of the file and where the bracket was opened instead.
    with pytest.raises(ManifestError) as caught:
        parse_text("p.yaml", "a: 1\nb: [1\n")
    assert caught.value.summary == (
        "p.yaml: invalid YAML at the end of the file: expected ',' or ']', but got the end "
        "of the file (while parsing a flow sequence started at line 2, column 4)"
    )
    with pytest.raises(ManifestError, match=r"p.json: invalid JSON at line 1"):
        parse_text("p.json", "{nope}")


def test_missing_file_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        read_documents([str(tmp_path / "nope.yaml")], io.StringIO())
    with pytest.raises(ManifestError, match="empty"):
        read_documents(["-"], io.StringIO("---\n"))


def test_every_error_of_every_document_is_reported() -> None:
    bad = SEED.replace("image: nginx:alpine", 'image: ""')
    other = NODE.replace("node-01", "Bad_Name", 1)
    text = bad + "---\nkind: Deployment\nmetadata: {name: x}\n---\n" + other + "---\n- 1\n"
    with pytest.raises(ManifestError) as info:
        validate_documents(read_documents(["-"], io.StringIO(text)))
    err = info.value
    assert err.summary == "invalid manifests: 4 errors; nothing was applied"
    assert err.lines[0] == 'project "my-project": spec.services[0].image: must not be empty'
    assert err.lines[1] == (
        '<stdin> (document 2): kind: unsupported kind "Deployment" (expected Project or Node)'
    )
    assert err.lines[2].startswith('node "Bad_Name": metadata.name: must be a DNS label')
    assert err.lines[3] == "<stdin> (document 4): a manifest must be a mapping (an object)"


def test_duplicates_are_an_error() -> None:
    with pytest.raises(ManifestError) as info:
        validate_documents(read_documents(["-"], io.StringIO(SEED + "---\n" + SEED)))
    assert "defined twice" in info.value.lines[0]
