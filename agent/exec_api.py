"""``caractrl exec`` on the agent: a command in a service's container (Docker exec), over a
WebSocket.

The protocol (the same on the server's relay, which copies the messages unchanged) is
Kubernetes' channel framing: every binary message starts with one channel byte.

- 0 stdin (client → agent); an empty payload closes stdin (EOF)
- 1 stdout, 2 stderr (agent → client; with a TTY everything is 1)
- 3 status (agent → client, last message): JSON ``{"exitCode": N}``
- 4 resize (client → agent): JSON ``{"cols": C, "rows": R}``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiodocker
import aiohttp
import structlog
from aiohttp import web

log = structlog.get_logger("agent.exec")

STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4
# After its output ends, Docker may report the exec as running a moment longer.
EXIT_CODE_TIMEOUT = 10.0


async def serve_exec(
    request: web.Request,
    docker: aiodocker.Docker,
    container_id: str,
    command: list[str],
    *,
    tty: bool,
    stdin: bool,
) -> web.WebSocketResponse:
    container = docker.containers.container(container_id)
    execution = await container.exec(command, stdout=True, stderr=True, stdin=stdin, tty=tty)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=0)
    await ws.prepare(request)
    log.info("exec started", container=container_id[:12], command=command, tty=tty)
    async with execution.start(detach=False) as stream:

        async def output() -> None:
            while (msg := await stream.read_out()) is not None:
                channel = STDERR if msg.stream == 2 else STDOUT
                await ws.send_bytes(bytes([channel]) + msg.data)

        async def input_() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                        break
                    continue
                channel, payload = msg.data[0], msg.data[1:]
                if channel == STDIN and stdin:
                    if payload:
                        await stream.write_in(payload)
                    else:
                        _close_stdin(stream)
                elif channel == RESIZE:
                    with contextlib.suppress(ValueError, KeyError, aiodocker.DockerError):
                        size = json.loads(payload)
                        await execution.resize(h=int(size["rows"]), w=int(size["cols"]))

        out_task = asyncio.create_task(output())
        in_task = asyncio.create_task(input_())
        try:
            # The command ends (its output closes) or the client goes away.
            await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            in_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await in_task
        if out_task.done() and not ws.closed:
            code = await _exit_code(execution)
            with contextlib.suppress(ConnectionResetError):
                await ws.send_bytes(bytes([STATUS]) + json.dumps({"exitCode": code}).encode())
        else:
            # The client left: Docker cannot kill an exec'd process; its output is dropped.
            out_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await out_task
    await ws.close()
    log.info("exec ended", container=container_id[:12])
    return ws


def _close_stdin(stream: Any) -> None:
    """Half-close the hijacked connection: the command reads EOF, its output still comes.
    aiodocker's Stream only offers a full close, so this reaches for its transport."""
    with contextlib.suppress(AttributeError, OSError):
        transport = stream._resp.connection.transport
        if transport is not None and transport.can_write_eof():
            transport.write_eof()


async def _exit_code(execution: Any) -> int:
    """The exec's exit code, once Docker has it (-1 if it never says)."""
    deadline = asyncio.get_running_loop().time() + EXIT_CODE_TIMEOUT
    while True:
        try:
            info = await execution.inspect()
        except aiodocker.DockerError:
            return -1
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        if asyncio.get_running_loop().time() > deadline:
            return -1
        await asyncio.sleep(0.05)
