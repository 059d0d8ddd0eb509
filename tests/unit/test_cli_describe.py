"""`caractrl describe`: layout, and every field of the models is shown somewhere.

The original had a reflective test so that a field added to the API could not be silently
missing from describe; this is ours: build objects with a distinctive value in every field
(walking the pydantic models) and look for each value in the report.
"""

from __future__ import annotations

import itertools
import types
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Union, get_args, get_origin

from pydantic import AwareDatetime, BaseModel

from caravanserai.api import Node, Project
from cli.describe import describe_node, describe_project
from cli.formatting import human_duration

NOW = datetime(2026, 4, 7, 12, 0, 0, tzinfo=UTC)

# Fields describe deliberately does not print, and why.
NOT_SHOWN = {
    "apiVersion": "a constant of the API",
    "status.services[].name": "shown as the spec service it belongs to",
    "status.services[].containerId": "shortened to 12 characters",
    "metadata.deletionTimestamp": "checked separately (only shown while deleting)",
}


class Sample:
    """Distinctive values per field path, and what to look for in the output."""

    def __init__(self) -> None:
        self.expect: dict[str, str] = {}
        self._n = itertools.count(1)

    def build(self, model: type[BaseModel], path: str = "") -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            alias = field.alias or name
            data[alias] = self.value(field.annotation, f"{path}.{alias}" if path else alias)
        return data

    def value(self, tp: Any, path: str) -> Any:
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            return self.value(next(a for a in get_args(tp) if a is not type(None)), path)
        if origin is list:
            return [self.value(get_args(tp)[0], path + "[]")] if get_args(tp) else []
        if origin is dict:
            key, val = f"k{next(self._n)}", f"v{next(self._n)}"
            self.expect[path] = f"{key}={val}" if "labels" in path or "annotations" in path else val
            return {key: val}
        if str(origin) == "typing.Literal":
            return get_args(tp)[0]
        while hasattr(tp, "__metadata__"):  # Annotated[...] -> its type
            tp = tp.__origin__
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return self.build(tp, path)
        if isinstance(tp, type) and issubclass(tp, Enum):
            member = next(iter(tp))
            self.expect[path] = str(member.value)
            return member.value
        if tp is bool:
            return True
        if tp is int:
            n = 40000 + next(self._n)
            self.expect[path] = str(n)
            return n
        if tp in (datetime, AwareDatetime):
            ts = NOW - timedelta(days=10 + next(self._n))
            self.expect[path] = human_duration((NOW - ts).total_seconds())
            return ts.isoformat()
        text = f"val{next(self._n)}x"
        self.expect[path] = text
        return text


def check_all_shown(model: type[BaseModel], render: Any) -> None:
    sample = Sample()
    data = sample.build(model)
    if "spec" in data and "services" in data["spec"]:
        # status.services are matched to spec services by name.
        data["status"]["services"][0]["name"] = data["spec"]["services"][0]["name"]
        # volume mounts must name a volume; references are not checked here, only shown.
    data["metadata"]["deletionTimestamp"] = None
    if "network" in data.get("status", {}):
        # A node's address must be an IP address (the relay connects to it).
        data["status"]["network"]["ip"] = sample.expect["status.network.ip"] = "10.9.8.7"
    obj = model.model_validate(data)
    text = render(obj)
    missing = []
    for path, expected in sample.expect.items():
        if path in NOT_SHOWN:
            continue
        if expected not in text:
            missing.append(f"{path}: {expected!r}")
    assert not missing, "fields missing from describe:\n" + "\n".join(missing) + "\n" + text


def test_every_project_field_is_shown() -> None:
    check_all_shown(Project, lambda p: describe_project(p, NOW))


def test_every_node_field_is_shown() -> None:
    check_all_shown(Node, lambda n: describe_node(n, NOW))


SEED_PROJECT = {
    "apiVersion": "caravanserai/v1",
    "kind": "Project",
    "metadata": {
        "name": "my-project",
        "uid": "0b6c",
        "resourceVersion": "42",
        "generation": 1,
        "creationTimestamp": (NOW - timedelta(seconds=12)).isoformat(),
    },
    "spec": {
        "services": [
            {
                "name": "web",
                "image": "nginx:alpine",
                "env": [{"name": "APP_ENV", "value": "production"}],
                "ports": [{"containerPort": 80, "hostPort": 8080}],
            },
        ],
    },
    "status": {
        "phase": "Running",
        "nodeRef": "node-01",
        "conditions": [
            {
                "type": "Phase",
                "status": "True",
                "reason": "ContainersRunning",
                "message": "all containers running",
                "lastTransitionTime": (NOW - timedelta(seconds=5)).isoformat(),
            },
        ],
        "history": [
            {
                "phase": "Pending",
                "reason": "Created",
                "time": (NOW - timedelta(seconds=12)).isoformat(),
            },
            {
                "phase": "Scheduled",
                "reason": "Scheduled",
                "message": "on node-01",
                "time": (NOW - timedelta(seconds=10)).isoformat(),
            },
            {
                "phase": "Running",
                "reason": "ContainersRunning",
                "time": (NOW - timedelta(seconds=5)).isoformat(),
            },
        ],
    },
}


def test_project_layout() -> None:
    text = describe_project(Project.model_validate(SEED_PROJECT), NOW)
    lines = text.splitlines()
    assert lines[0] == "Name:                 my-project"
    assert "Created:              2026-04-07T11:59:48Z (12s ago)" in lines
    assert "Phase:                Running" in lines
    assert "Node:                 node-01" in lines
    assert "Conditions Summary:   ContainersRunning" in lines
    # Every top-level value starts in the same column.
    columns = {
        line.index(":")
        + 1
        + len(line[line.index(":") + 1 :])
        - len(line[line.index(":") + 1 :].lstrip())
        for line in lines
        if line and not line.startswith(" ") and not line.endswith(":")
    }
    assert len(columns) == 1
    i = lines.index("Services:")
    assert lines[i + 1 : i + 8] == [
        "  web:",
        "    Image:          nginx:alpine",
        "    Ports:          8080:80/tcp",
        "    State:          <unknown>",
        "    Env:",
        "      APP_ENV=production",
        "    Volume Mounts:  <none>",
    ]
    i = lines.index("Conditions:")
    assert lines[i + 1].split() == [
        "TYPE",
        "STATUS",
        "REASON",
        "LAST",
        "TRANSITION",
        "LAST",
        "HEARTBEAT",
        "MESSAGE",
    ]
    assert lines[i + 2].split() == [
        "Phase",
        "True",
        "ContainersRunning",
        "5s",
        "-",
        "all",
        "containers",
        "running",
    ]
    i = lines.index("Phase History:")
    # Newest first.
    assert [line.split()[0] for line in lines[i + 1 : i + 5]] == [
        "PHASE",
        "Running",
        "Scheduled",
        "Pending",
    ]
    assert lines[i + 3].split() == ["Scheduled", "Scheduled", "on", "node-01", "10s"]
    assert "Volumes:" in lines and lines[lines.index("Volumes:") + 1] == "  <none>"


def test_deleting_project_shows_since_when() -> None:
    data = {
        **SEED_PROJECT,
        "metadata": {
            **SEED_PROJECT["metadata"],  # type: ignore[dict-item]
            "deletionTimestamp": (NOW - timedelta(seconds=3)).isoformat(),
        },
    }
    assert (
        "Deleting Since:       2026-04-07T11:59:57Z (3s ago)"
        in describe_project(Project.model_validate(data), NOW).splitlines()
    )


def test_node_lists_its_projects() -> None:
    node = Node.model_validate(
        {
            "apiVersion": "caravanserai/v1",
            "kind": "Node",
            "metadata": {"name": "node-01"},
            "status": {"state": "Ready"},
        }
    )
    text = describe_node(node, NOW, projects=[Project.model_validate(SEED_PROJECT)])
    lines = text.splitlines()
    i = lines.index("Projects:")
    assert lines[i + 1].split() == ["NAME", "PHASE", "AGE"]
    assert lines[i + 2].split() == ["my-project", "Running", "12s"]
    assert "State:           Ready" in lines or any(
        line.startswith("State:") and line.endswith("Ready") for line in lines
    )


def test_a_long_message_does_not_stretch_the_phase_history() -> None:
    long = "Error response from daemon: pull access denied for nosuchimage, " * 4
    project = Project.model_validate({
        "apiVersion": "caravanserai/v1", "kind": "Project",
        "metadata": {"name": "p", "creationTimestamp": "2026-04-07T10:00:00Z"},
        "spec": {"services": [{"name": "web", "image": "nosuchimage"}],
                 "ingress": [{"name": "www", "host": "news",
                              "target": {"service": "web", "port": 80}}]},
        "status": {"phase": "Failed", "history": [
            {"phase": "Failed", "reason": "ImagePullFailed", "message": long,
             "time": "2026-04-07T10:00:05Z"},
        ]},
    })
    text = describe_project(project, now=datetime(2026, 4, 7, 10, 1, tzinfo=UTC))
    lines = text.splitlines()
    history = lines[lines.index("Phase History:") + 1:]
    assert all(len(line) <= 120 for line in history), history
    assert history[1].split()[:2] == ["Failed", "ImagePullFailed"]
    assert "…" in history[1]
    # The ingress host as it routes: the short form completed with the node's domain.
    assert any(line.split()[:2] == ["www", "news.dev.cara.local"] for line in lines), text
    other = describe_project(project, now=datetime(2026, 4, 7, 10, 1, tzinfo=UTC),
                             ingress_domain="prod.example.org")
    assert "news.prod.example.org" in other
