"""e2e: ``caractrl exec`` through the server's relay to the agent (Docker exec) on the real
engine: output on the right stream, the exit code as caractrl's, stdin, a TTY."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import struct
import termios

import aiodocker
import pytest
from agent_e2e_support import BIN, BUSYBOX, AgentHandle, apply, manifest, unique, wait_phase

from caravanserai.client import CaravanseraiClient

pytestmark = pytest.mark.docker

CARACTRL = str(BIN / "caractrl")


async def _run(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CARACTRL, *args, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _run_in_a_terminal(env: dict[str, str], rows: int, cols: int, *args: str) -> tuple[
    int, str
]:
    """caractrl with a pseudo-terminal of ``rows`` x ``cols`` as stdin/stdout/stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        CARACTRL, *args, env=env, stdin=slave, stdout=slave, stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every holder of the terminal has closed it
                return
            if not data:
                return
            chunks.append(data)

    try:
        async with asyncio.timeout(60):
            reader = asyncio.get_running_loop().run_in_executor(None, read_all)
            code = await proc.wait()
            await reader
    finally:
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


async def test_exec_output_exit_code_stdin_and_tty(
    api: CaravanseraiClient, agent: AgentHandle, docker: aiodocker.Docker
) -> None:
    name = unique("exec")
    await apply(api, agent.node, manifest(name, [{"name": "box", "image": BUSYBOX}]))
    await wait_phase(api, name, "Running")
    env = {**os.environ, "CARA_SERVER": api.base_url}

    code, out, err = await _run(env, "exec", name, "--", "sh", "-c",
                                "echo to-out; echo to-err >&2; exit 3")
    assert (code, out, err) == (3, "to-out\n", "to-err\n")

    code, out, err = await _run(env, "exec", "-i", f"{name}/box", "--", "sh", "-c",
                                "tr a-z A-Z", stdin=b"hello from stdin\n")
    assert (code, out) == (0, "HELLO FROM STDIN\n"), err

    # A terminal: the command's stdin and stdout are one (and a TTY's exit code is kept).
    # The size sent along (resize messages) is not checked inside: this busybox's stty
    # cannot read a Docker pty's size on every engine.
    code, text = await _run_in_a_terminal(env, 31, 97, "exec", "-it", name, "--", "sh", "-c",
                                          "test -t 0 && test -t 1 && echo on-a-tty; exit 7")
    assert code == 7, text
    assert "on-a-tty" in text, text
    # Without a terminal there is none.
    code, out, _ = await _run(env, "exec", name, "--", "sh", "-c", "test -t 1 || echo no-tty")
    assert (code, out) == (0, "no-tty\n")

    code, _, err = await _run(env, "exec", f"{name}/nope", "--", "true")
    assert code == 1 and err.startswith("Error: ") and "nope" in err, err
