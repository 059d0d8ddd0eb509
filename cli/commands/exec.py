"""``caractrl exec PROJECT[/SERVICE] [-i] [-t] -- COMMAND [ARG...]``: run a command in a
service's container, through the server (which relays to the node's agent: Docker exec).

The WebSocket's messages carry a channel byte (``agent/exec_api.py``): stdin goes out on 0,
stdout and stderr come back on 1 and 2, the exit status on 3, terminal size changes go out
on 4. caractrl exits with the command's exit code, as kubectl exec does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

import aiohttp
import click

from caravanserai.client.errors import RequestTimeout, ServerUnreachable
from caravanserai.client.http import CaravanseraiClient
from cli.commands.logs import split_target
from cli.context import get_state, global_options, honour_sigint
from cli.errors import CommandError
from cli.streams import _problem, _project_path, _reason, _session

STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4


@click.command("exec", short_help="Run a command in a service's container.",
               context_settings={"allow_interspersed_args": False})
@click.argument("target", metavar="PROJECT[/SERVICE]")
@click.argument("command", nargs=-1, required=True, metavar="-- COMMAND [ARG...]")
@click.option("-i", "--stdin", "stdin", is_flag=True, help="Pass stdin to the command.")
@click.option("-t", "--tty", is_flag=True,
              help="Allocate a terminal for the command (with -i: an interactive shell).")
@global_options
def exec_(target: str, command: tuple[str, ...], stdin: bool, tty: bool) -> None:
    """Run COMMAND in the container of a project's service; exit with its exit code.

    SERVICE may be left out when the project has one service. Needs the project to be on
    a node with its container running.

    \b
    Examples:
      caractrl exec blog/api -- cat /etc/hostname
      caractrl exec -it blog/web -- sh
      echo hello | caractrl exec -i blog/api -- cat
    """
    project, service = split_target(target)
    # Options end at TARGET (so the command's own options are its own): the "--" kubectl
    # users type then arrives as a word of the command.
    words = list(command[1:] if command[:1] == ("--",) else command)
    if not words:
        raise click.UsageError("say which command to run: exec PROJECT/SERVICE -- COMMAND")
    state = get_state()
    if tty and not stdin:
        # kubectl's advice: a terminal without input is rarely what was meant.
        click.echo("Unable to use a TTY - input is not enabled (add -i)", err=True)
        tty = False
    local_tty = tty and sys.stdin.isatty()
    honour_sigint()
    code = state.run(
        lambda c: _exec(c, project, service, words, stdin=stdin, tty=tty,
                        raw=local_tty)
    )
    if code:
        raise click.exceptions.Exit(code)


async def _exec(
    client: CaravanseraiClient, project: str, service: str | None, command: list[str], *,
    stdin: bool, tty: bool, raw: bool,
) -> int:
    params = [("command", c) for c in command] + [
        ("tty", str(tty).lower()), ("stdin", str(stdin).lower())
    ]
    if service:
        params.append(("service", service))
    url = client.url(_project_path(project, "exec"))
    try:
        ws = await _session(client).ws_connect(
            url, params=params, timeout=aiohttp.ClientWSTimeout(ws_close=10),
            heartbeat=30, max_msg_size=0,
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise await _refusal(client, url, params, exc) from None
    except TimeoutError as exc:
        raise RequestTimeout(f"exec in {project}", client.timeout) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ServerUnreachable(client.base_url, _reason(exc)) from exc
    loop = asyncio.get_running_loop()
    # Everything we send goes through one queue and one task: stdin chunks stay in order,
    # and a resize from the signal handler needs no task of its own.
    outbox: asyncio.Queue[bytes] = asyncio.Queue()
    sender = asyncio.create_task(_send_all(ws, outbox))
    restore: Any = None
    try:
        if raw:
            restore = _raw_terminal()
            outbox.put_nowait(_size_message())
            with contextlib.suppress(ValueError, RuntimeError):
                loop.add_signal_handler(
                    signal.SIGWINCH, lambda: outbox.put_nowait(_size_message())
                )
        if stdin:
            _start_stdin(outbox, loop)  # a daemon thread: it ends with the process
        return await _receive(ws)
    finally:
        if raw:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signal.SIGWINCH)
        if restore is not None:
            restore()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        await ws.close()


async def _refusal(
    client: CaravanseraiClient, url: str, params: list[tuple[str, str]],
    exc: aiohttp.WSServerHandshakeError,
) -> Exception:
    """The server's problem (e.g. no such service): aiohttp keeps only the status of a
    refused handshake, so ask again without the upgrade; the server answers before it
    would look at the upgrade, with the problem's detail."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with _session(client).get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=client.timeout)
        ) as resp:
            body = await resp.read()
            # "needs a WebSocket upgrade": the refusal came later (from the agent).
            if resp.status >= 400 and b"WebSocket upgrade" not in body:
                return _problem(resp.status, resp.reason, body, resp.content_type)
    return _problem(exc.status, exc.message, b"", "")


async def _send_all(ws: aiohttp.ClientWebSocketResponse, outbox: asyncio.Queue[bytes]) -> None:
    while True:
        message = await outbox.get()
        if ws.closed:
            return
        await ws.send_bytes(message)


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> int:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
            continue
        channel, payload = msg.data[0], msg.data[1:]
        if channel == STDOUT:
            out.write(payload)
            out.flush()
        elif channel == STDERR:
            err.write(payload)
            err.flush()
        elif channel == STATUS:
            return int(json.loads(payload).get("exitCode", -1))
    raise CommandError("the connection ended before the command's exit status arrived")


def _start_stdin(outbox: asyncio.Queue[bytes], loop: asyncio.AbstractEventLoop) -> None:
    """Copy our stdin to the command from a daemon thread (a blocking read cannot be
    cancelled, and must not hold the program open once the command has ended)."""

    def send(data: bytes) -> None:
        outbox.put_nowait(bytes([STDIN]) + data)

    def pump() -> None:
        fd = sys.stdin.fileno()
        while True:
            try:
                data = os.read(fd, 32 * 1024)
            except OSError:
                data = b""
            loop.call_soon_threadsafe(send, data)  # b"": EOF, closes the command's stdin
            if not data:
                return

    threading.Thread(target=pump, name="exec-stdin", daemon=True).start()


def _size_message() -> bytes:
    size = shutil.get_terminal_size()
    return bytes([RESIZE]) + json.dumps({"cols": size.columns, "rows": size.lines}).encode()


def _raw_terminal() -> Any:
    """Put the local terminal in raw mode (keys go to the remote shell as typed, Ctrl-C
    included); returns the function that restores it."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore
