"""``caractrl wait`` against a real cara-server (the tests play scheduler and agent)."""

from __future__ import annotations

import subprocess

from test_cli_e2e import (
    CARACTRL,
    PROJECT_YAML,
    Server,
    caractrl,
    env,
    register_node,
    server,
    set_running,
)

__all__ = ["env", "server"]  # fixtures used by name


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([CARACTRL, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen[str], text: str) -> None:
    """Until the waiter reports ``text`` on stderr: it has seen the state before the change."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never came; stderr: {''.join(seen)}")


def test_wait_for_phase_shows_progress_and_ends_when_met(
    server: Server, env: dict[str, str]
) -> None:
    register_node(server, "node-01")
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    proc = _start(env, "wait", "project/my-project", "--for=phase=Running", "--timeout=60s")
    try:
        _wait_line(proc, "project/my-project: Pending, 0/1 service running")
        set_running(server, "my-project")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "project/my-project condition met\n"
    assert "project/my-project: Running on node-01" in err and "\r" not in err


def test_wait_for_delete_and_for_a_node_condition(server: Server, env: dict[str, str]) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    proc = _start(env, "wait", "projects", "my-project", "--for", "delete")
    try:
        _wait_line(proc, "project/my-project: Pending")
        assert caractrl(env, "delete", "project", "my-project").returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, "project/my-project deleted\n"), err
    # Already gone: met at once.
    r = caractrl(env, "wait", "project/my-project", "--for=delete")
    assert (r.returncode, r.stdout) == (0, "project/my-project deleted\n")

    register_node(server, "node-01")
    r = caractrl(env, "wait", "node/node-01", "--for=condition=Ready")
    assert (r.returncode, r.stdout) == (0, "node/node-01 condition met\n"), r.stderr


def test_wait_errors_are_one_line(server: Server, env: dict[str, str]) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    r = caractrl(env, "wait", "project/my-project", "--for=phase=Running", "--timeout=1s")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "Error: timed out after 1s waiting for phase Running of project/my-project"
    )
    r = caractrl(env, "wait", "project/nope", "--for=phase=Running")
    assert (r.returncode, r.stderr) == (1, 'Error: project "nope" not found\n')
    r = caractrl(env, "wait", "project/my-project", "--for=color=blue")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
