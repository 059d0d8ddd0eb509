"""``--dry-run=server|client`` on apply and delete, and ``caractrl diff``, against a real
cara-server: the server runs every check of a write and stores nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from test_cli_e2e import (
    PROJECT_YAML,
    Server,
    caractrl,
    env,
    register_node,
    server,
    set_running,
)

__all__ = ["env", "server"]  # fixtures used by name

CHANGED_YAML = PROJECT_YAML.replace("nginx:alpine", "nginx:1.27")


def _revision(server: Server) -> str:
    return str(server.get_raw("/api/v1/projects")["metadata"]["resourceVersion"])


def test_server_dry_run_checks_everything_and_changes_nothing(
    server: Server, env: dict[str, str]
) -> None:
    # A create: the would-be object comes back (defaults and initial status filled in).
    r = caractrl(env, "apply", "-f", "-", "--dry-run=server", "-o", "json", stdin=PROJECT_YAML)
    assert r.returncode == 0, r.stderr
    would = json.loads(r.stdout)
    assert would["metadata"]["name"] == "my-project"
    assert would["status"]["phase"] == "Pending"
    assert server.get_raw("/api/v1/projects")["items"] == []
    r = caractrl(env, "apply", "-f", "-", "--dry-run=server", stdin=PROJECT_YAML)
    assert r.stdout == 'project "my-project" created (server dry run)\n'

    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    before = _revision(server)
    # An update: configured, but neither the spec nor the revision moves.
    r = caractrl(env, "apply", "-f", "-", "--dry-run=server", stdin=CHANGED_YAML)
    assert r.stdout == 'project "my-project" configured (server dry run)\n', r.stderr
    live = server.get_raw("/api/v1/projects/my-project")
    assert live["spec"]["services"][0]["image"] == "nginx:alpine"
    r = caractrl(env, "apply", "-f", "-", "--dry-run=client", stdin=CHANGED_YAML)
    assert r.stdout == 'project "my-project" configured (dry run)\n', r.stderr
    r = caractrl(env, "delete", "project", "my-project", "--dry-run=server")
    assert r.stdout == 'project "my-project" deleted (server dry run)\n', r.stderr
    assert server.get_raw("/api/v1/projects/my-project")["metadata"]["name"] == "my-project"
    assert _revision(server) == before

    # Admission still runs: a node with a project on it refuses deletion, dry or not.
    register_node(server, "node-01")
    set_running(server, "my-project")
    r = caractrl(env, "delete", "node", "node-01", "--dry-run=server")
    assert r.returncode == 1 and r.stderr.startswith("Error: "), r.stderr
    # And a project on a node is only marked Terminating (202) — in a dry run, not even that.
    r = caractrl(env, "delete", "project", "my-project", "--dry-run=server")
    assert r.stdout == 'project "my-project" is being deleted (server dry run)\n', r.stderr
    assert server.get_raw("/api/v1/projects/my-project")["status"]["phase"] == "Running"

    r = caractrl(env, "delete", "project", "nope", "--dry-run=client")
    assert (r.returncode, r.stderr) == (1, 'Error: project "nope" not found\n')


def test_bad_dry_run_value_is_a_400(server: Server) -> None:
    req = urllib.request.Request(
        server.url + "/api/v1/projects/x?dryRun=maybe", method="DELETE"
    )
    try:
        urllib.request.urlopen(req, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        assert exc.headers["Content-Type"].startswith("application/problem+json")
    else:
        raise AssertionError("dryRun=maybe was accepted")


def test_diff_exit_codes_and_output(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    # Not there yet: everything is new.
    r = caractrl(env, "diff", "-f", "-", stdin=PROJECT_YAML)
    assert r.returncode == 1, r.stderr
    assert "+++ merged/project/my-project" in r.stdout
    assert "+      image: nginx:alpine" in r.stdout.replace("+    - ", "+      ")

    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    r = caractrl(env, "diff", "-f", "-", stdin=PROJECT_YAML)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")

    r = caractrl(env, "diff", "-f", "-", stdin=CHANGED_YAML)
    assert r.returncode == 1
    assert r.stdout.startswith("--- live/project/my-project\n+++ merged/project/my-project\n")
    assert "-      image: nginx:alpine\n" in r.stdout
    assert "+      image: nginx:1.27\n" in r.stdout
    # Nothing was changed by looking.
    live = server.get_raw("/api/v1/projects/my-project")
    assert live["spec"]["services"][0]["image"] == "nginx:alpine"

    r = caractrl(env, "diff", "-f", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and r.stderr.startswith("Error: "), r.stderr
