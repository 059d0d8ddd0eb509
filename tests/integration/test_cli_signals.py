"""caractrl and Ctrl-C, against a real cara-server: streaming commands stop even when they
were started with SIGINT ignored (a background job of a script, nohup, some CI runners), and
a non-streaming command interrupted exits 130 with no "Aborted!"."""

from __future__ import annotations

import signal
import subprocess

from test_cli_e2e import (  # the server fixtures and the streaming helper of the CLI e2e tests
    CARACTRL,
    PROJECT_YAML,
    Server,
    Streaming,
    caractrl,
    env,
    server,
    streams,
)

__all__ = ["env", "server", "streams"]  # fixtures used by name


def _ignoring_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class IgnoringStreaming(Streaming):
    """A streaming caractrl started the way a script's background job is: SIGINT ignored."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        real_popen = subprocess.Popen

        def popen(*a: object, **kw: object) -> subprocess.Popen[str]:
            return real_popen(*a, preexec_fn=_ignoring_sigint, **kw)  # type: ignore[call-overload,no-any-return]

        subprocess.Popen = popen  # type: ignore[misc,assignment]
        try:
            super().__init__(env, *args)
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]


def test_watch_stops_on_sigint_even_when_it_was_inherited_as_ignored(
    server: Server, env: dict[str, str], streams: list[Streaming]
) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    watch = IgnoringStreaming(env, "get", "projects", "-w")
    streams.append(watch)
    assert watch.next_line().split()[0] == "NAME"
    assert watch.next_line().split()[0] == "my-project"
    code, stderr = watch.interrupt()  # raises if it ignores the signal for 15 s
    assert code == 0
    assert "Traceback" not in stderr


def test_ctrl_c_during_a_wait_exits_130_without_aborted(
    server: Server, env: dict[str, str]
) -> None:
    # No agent and no scheduler: the project stays Pending, so --wait waits until interrupted.
    proc = subprocess.Popen(
        [CARACTRL, "apply", "-f", "-", "--wait"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(PROJECT_YAML)
    proc.stdin.close()
    assert proc.stdout.readline() == 'project "my-project" created\n'
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 130
    assert "Aborted" not in stderr and "Traceback" not in stderr, stderr
