"""caractrl commands against an in-memory fake of the typed client (no server needed).

The real server is exercised by tests/integration/test_cli_e2e.py; these cover option
parsing, output shapes and error paths quickly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from caravanserai.api import (
    AlreadyExists,
    Conflict,
    Invalid,
    Node,
    NotFound,
    Project,
)
from caravanserai.api.problems import FieldError
from caravanserai.client.errors import ServerUnreachable
from caravanserai.client.http import ListOptions, ObjectList
from cli.config import Settings
from cli.context import State
from cli.main import cli

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


class FakeResources:
    def __init__(self, model: type[Project] | type[Node], fake: FakeClient) -> None:
        self.model = model
        self.fake = fake
        self.items: dict[str, Any] = {}
        self.conflicts_to_raise = 0
        self.delete_accepts = False  # True: answer 202 (Terminating) like a project on a node

    def _next(self) -> str:
        self.fake.revision += 1
        return str(self.fake.revision)

    async def create(self, body: Mapping[str, Any], *, dry_run: bool = False) -> Any:
        self.fake.calls.append(("create", body["metadata"]["name"]))
        name = body["metadata"]["name"]
        if name in self.items:
            raise AlreadyExists(f'{self.model.__name__.lower()} "{name}" already exists')
        data = json.loads(json.dumps(body))
        data["metadata"].update(
            resourceVersion=self._next(),
            generation=1,
            creationTimestamp=datetime.now(UTC).isoformat(),
        )
        if self.model is Project:
            data["status"] = {"phase": "Pending"}
        obj = self.model.model_validate(data)
        if not dry_run:
            self.items[name] = obj
        return obj

    async def get(self, name: str) -> Any:
        if name not in self.items:
            raise NotFound(f'{self.model.__name__.lower()} "{name}" not found')
        return self.items[name]

    async def list(self, options: ListOptions | None = None, **_: Any) -> ObjectList[Any]:
        items = list(self.items.values())
        if options and options.phase:
            items = [i for i in items if i.status.phase in options.phase]
        return ObjectList(items, str(self.fake.revision))

    async def list_all(self, options: ListOptions | None = None, **_: Any) -> ObjectList[Any]:
        return await self.list(options)

    async def update(self, body: Mapping[str, Any], *, dry_run: bool = False) -> Any:
        name = body["metadata"]["name"]
        self.fake.calls.append(("update", name))
        current = await self.get(name)
        if self.conflicts_to_raise:
            self.conflicts_to_raise -= 1
            current = current.model_copy(deep=True)
            current.metadata.resource_version = self._next()
            self.items[name] = current
            raise Conflict("the object has been modified")
        if body["metadata"].get("resourceVersion") != current.metadata.resource_version:
            raise Conflict("stale resourceVersion")
        new = current.model_copy(deep=True)
        new.spec = type(current.spec).model_validate(body.get("spec") or {})
        new.metadata.labels = dict(body["metadata"].get("labels") or {})
        new.metadata.resource_version = self._next()
        if not dry_run:
            self.items[name] = new
        return new

    async def delete(self, name: str, *, force: bool = False, dry_run: bool = False) -> Any:
        self.fake.calls.append(("delete", name))
        obj = await self.get(name)
        if self.delete_accepts and not force:
            return obj
        if not dry_run:
            del self.items[name]
        return None


class FakeClient:
    def __init__(self) -> None:
        self.revision = 0
        self.calls: list[tuple[str, str]] = []
        self.projects = FakeResources(Project, self)
        self.nodes = FakeResources(Node, self)
        self.settings: list[Settings] = []
        self.unreachable = False

    async def __aenter__(self) -> FakeClient:
        if self.unreachable:
            err = ConnectionRefusedError(111, "Connection refused")
            raise ServerUnreachable(self.settings[-1].server, "Connect call failed") from err
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def version(self) -> dict[str, Any]:
        return {"version": "0.1.0", "apiVersion": "caravanserai/v1"}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CARA_CONFIG": str(tmp_path / "config.yaml")}


def run(fake: FakeClient, env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    def factory(settings: Settings) -> Any:
        fake.settings.append(settings)
        return fake

    state = State(environ=env, client_factory=factory, manage_logging=False)
    return CliRunner().invoke(cli, list(args), obj=state, input=stdin, prog_name="caractrl")


def test_global_options_before_and_after_the_subcommand(
    fake: FakeClient, env: dict[str, str]
) -> None:
    assert run(fake, env, "apply", "-f", "-", stdin=SEED).exit_code == 0
    before = run(fake, env, "--output", "json", "get", "projects", "my-project")
    after = run(fake, env, "get", "projects", "my-project", "-o", "json")
    assert before.exit_code == after.exit_code == 0
    assert before.stdout == after.stdout
    assert json.loads(before.stdout)["metadata"]["name"] == "my-project"
    run(fake, env, "-s", "http://first:1", "get", "projects")
    run(fake, env, "get", "projects", "--server", "http://second:2")
    # After the subcommand wins over before it: the last word on the line.
    run(fake, env, "-s", "http://first:1", "get", "projects", "-s", "http://third:3")
    assert [s.server for s in fake.settings[-3:]] == [
        "http://first:1",
        "http://second:2",
        "http://third:3",
    ]


def test_server_precedence_flag_env_config(fake: FakeClient, env: dict[str, str]) -> None:
    assert run(fake, env, "config", "set-server", "cfg:1").exit_code == 0
    run(fake, env, "get", "projects")
    run(fake, {**env, "CARA_SERVER": "http://env:2"}, "get", "projects")
    run(
        fake, {**env, "CARA_SERVER": "http://env:2"}, "--server", "http://flag:3", "get", "projects"
    )
    assert [s.server for s in fake.settings] == ["http://cfg:1", "http://env:2", "http://flag:3"]
    view = run(fake, env, "config", "view")
    assert "server: http://cfg:1" in view.stdout
    assert "# in effect: server http://cfg:1 (from config)" in view.stdout


def test_config_token_redacted(fake: FakeClient, env: dict[str, str]) -> None:
    run(fake, env, "config", "set-token", "s3cret")
    assert "token: REDACTED" in run(fake, env, "config", "view").stdout
    assert "token: s3cret" in run(fake, env, "config", "view", "--raw").stdout
    run(fake, env, "get", "projects")
    assert fake.settings[-1].token == "s3cret"


def test_apply_created_unchanged_configured(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "apply", "-f", "-", stdin=SEED)
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" created\n')
    r = run(fake, env, "apply", "-f", "-", stdin=SEED)
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" unchanged\n')
    r = run(fake, env, "apply", "-f", "-", stdin=SEED.replace("nginx:alpine", "nginx:1.27"))
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" configured\n')
    assert fake.projects.items["my-project"].spec.services[0].image == "nginx:1.27"


def test_apply_retries_on_conflict(fake: FakeClient, env: dict[str, str]) -> None:
    run(fake, env, "apply", "-f", "-", stdin=SEED)
    fake.projects.conflicts_to_raise = 2
    r = run(fake, env, "apply", "-f", "-", stdin=SEED.replace("nginx:alpine", "nginx:1.27"))
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" configured\n')
    assert [c for c in fake.calls if c[0] == "update"] == [("update", "my-project")] * 3


def test_apply_invalid_changes_nothing(fake: FakeClient, env: dict[str, str]) -> None:
    good = SEED.replace("my-project", "good")
    bad = SEED.replace("image: nginx:alpine", 'image: ""').replace("my-project", "x")
    r = run(fake, env, "apply", "-f", "-", stdin=good + "---\n" + bad)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "Error: invalid manifests: 1 error; nothing was applied",
        '  project "x": spec.services[0].image: must not be empty',
    ]
    assert fake.calls == []


def test_apply_server_rejection_is_reported_per_object(
    fake: FakeClient, env: dict[str, str]
) -> None:
    async def refuse(body: Mapping[str, Any]) -> Any:
        raise Invalid(
            'project "my-project" is invalid',
            [FieldError(field="spec.services[0].image", message="no such image")],
        )

    fake.projects.create = refuse  # type: ignore[method-assign]
    r = run(fake, env, "apply", "-f", "-", stdin=SEED)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        'Error: project "my-project" is invalid',
        "  spec.services[0].image: no such image",
    ]


def test_apply_output_name_and_json(fake: FakeClient, env: dict[str, str]) -> None:
    assert (
        run(fake, env, "apply", "-f", "-", "-o", "name", stdin=SEED).stdout
        == "project/my-project\n"
    )
    doc = json.loads(run(fake, env, "-o", "json", "apply", "-f", "-", stdin=SEED).stdout)
    assert doc["kind"] == "Project"


def test_get_table_list_and_empty(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "get", "projects")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "No projects found.\n")
    run(fake, env, "apply", "-f", "-", stdin=SEED)
    r = run(fake, env, "get", "project")
    lines = r.stdout.splitlines()
    assert lines[0] == "NAME         PHASE     NODE     CONDITIONS   AGE"
    assert lines[1].split() == ["my-project", "Pending", "<none>", "-", lines[1].split()[-1]]
    doc = json.loads(run(fake, env, "get", "projects", "-o", "json").stdout)
    assert doc["kind"] == "ProjectList" and len(doc["items"]) == 1
    assert run(fake, env, "get", "projects", "-o", "name").stdout == "project/my-project\n"
    yaml_out = run(fake, env, "get", "projects", "my-project", "-o", "yaml").stdout
    assert yaml_out.startswith("apiVersion: caravanserai/v1\nkind: Project\n")
    assert "    - name: web\n" in yaml_out  # sequences indented as in the seed manifests


def test_get_missing(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "get", "projects", "nope")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", 'Error: project "nope" not found\n')
    run(fake, env, "apply", "-f", "-", stdin=SEED)
    r = run(fake, env, "get", "projects", "my-project", "nope")
    assert r.exit_code == 1
    assert r.stdout.splitlines()[1].startswith("my-project")
    assert r.stderr == 'Error: project "nope" not found\n'


def test_phase_is_validated(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "get", "projects", "--phase=Runing")
    assert r.exit_code == 2
    # One line, naming every phase and the one meant; no usage block.
    assert r.stderr == (
        "Error: Invalid value for '--phase': 'Runing' is not one of Pending, Scheduled, "
        "Running, Failed, Terminating, Terminated; did you mean 'Running'? "
        "(see 'caractrl get --help')\n"
    )
    assert run(fake, env, "get", "projects", "--phase=Terminated").exit_code == 0
    assert run(fake, env, "get", "projects", "--phase=running").exit_code == 0
    assert run(fake, env, "get", "nodes", "--phase=Running").exit_code == 2


def test_usage_errors_are_one_line(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "get", "pods")
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (
        "Error: unknown resource type 'pods' (use projects, nodes or events) "
        "(see 'caractrl get --help')\n"
    )
    r = run(fake, env, "gett", "projects")
    assert (r.exit_code, r.stderr) == (
        2, "Error: unknown command 'gett'; did you mean 'get'? (see 'caractrl --help')\n"
    )
    r = run(fake, env, "--outptu", "json", "get", "projects")
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert run(fake, env, "get", "projects", "--phase=Running").exit_code == 0


def test_delete(fake: FakeClient, env: dict[str, str]) -> None:
    run(fake, env, "apply", "-f", "-", stdin=SEED)
    r = run(fake, env, "delete", "project", "my-project")
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" deleted\n')
    r = run(fake, env, "delete", "project", "my-project")
    assert (r.exit_code, r.stderr) == (1, 'Error: project "my-project" not found\n')
    run(fake, env, "apply", "-f", "-", stdin=SEED)
    fake.projects.delete_accepts = True
    r = run(fake, env, "delete", "projects", "my-project", "gone")
    assert r.exit_code == 1
    assert r.stdout == 'project "my-project" is being deleted\n'
    assert r.stderr == 'Error: project "gone" not found\n'


def test_delete_from_file(fake: FakeClient, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "project.yaml").write_text(SEED)
    run(fake, env, "apply", "-f", str(tmp_path / "project.yaml"))
    r = run(fake, env, "delete", "-f", str(tmp_path / "project.yaml"))
    assert (r.exit_code, r.stdout) == (0, 'project "my-project" deleted\n')
    assert run(fake, env, "delete").exit_code == 2
    assert run(fake, env, "delete", "project", "x", "-f", "y").exit_code == 2


def test_unreachable_server(fake: FakeClient, env: dict[str, str]) -> None:
    fake.unreachable = True
    r = run(fake, env, "get", "projects")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: cannot connect to the Caravanserai server at http://localhost:8080 "
        "(connection refused); set --server, CARA_SERVER or 'caractrl config set-server URL'\n"
    )
    assert "Traceback" not in r.output
    r = run(fake, env, "--debug", "get", "projects")
    assert "Traceback" in r.stderr and r.stderr.rstrip().splitlines()[-1].startswith("Error: ")
    r = run(fake, env, "version")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0] == "Client Version: 0.1.0"
    assert r.stdout.splitlines()[1].startswith("Server Version: <unreachable: cannot connect")


def test_version(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "version")
    assert r.stdout == "Client Version: 0.1.0\nServer Version: 0.1.0\n"
    doc = json.loads(run(fake, env, "version", "-o", "json").stdout)
    assert doc["clientVersion"]["version"] == "0.1.0"
    assert doc["serverVersion"]["version"] == "0.1.0"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(fake: FakeClient, env: dict[str, str], shell: str) -> None:
    r = run(fake, env, "completion", shell)
    assert r.exit_code == 0
    assert "_CARACTRL_COMPLETE" in r.stdout


def test_unknown_option_is_a_usage_error(fake: FakeClient, env: dict[str, str]) -> None:
    r = run(fake, env, "get", "projects", "--bogus")
    assert r.exit_code == 2
    assert "No such option '--bogus'" in r.stderr
