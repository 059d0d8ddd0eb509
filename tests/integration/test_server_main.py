"""The ``cara-server`` program itself, in a subprocess: startup failures, configuration
precedence, logs, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
import server_support
from server_support import (
    CARA_SERVER,
    ServerProcess,
    manifest,
    start_server_process,
    stop_server_process,
)

# Port 1 on loopback: nothing listens there, the connection is refused at once.
UNREACHABLE = "postgresql://cara:s3cret-pw@127.0.0.1:1/caravanserai"

server_process = pytest.fixture(server_support.run_server_process, name="server_process")


def run_server(
    env: dict[str, str], cwd: Path, *args: str, listen: bool = True
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "HOST", "PORT", "DEBUG") and not k.startswith("CARA_")}
    flags = ["--host", "127.0.0.1", "--port", "0"] if listen else []
    return subprocess.run(
        [CARA_SERVER, *flags, *args],
        cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=60,
    )


def test_missing_database_url_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_server({}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cara-server: DATABASE_URL is required")
    assert result.stdout == ""


def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_server({"DATABASE_URL": UNREACHABLE}, tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cara-server: cannot connect to PostgreSQL at ")
    assert "127.0.0.1:1" in lines[0]
    assert "s3cret-pw" not in result.stderr  # the password is never printed
    assert "Traceback" not in result.stderr


def test_invalid_setting_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("port: eighty\n")
    result = run_server({"DATABASE_URL": UNREACHABLE}, tmp_path, listen=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "cara-server: invalid port 'eighty' (from config.yaml): "
        "must be an integer between 0 and 65535"
    ]
    # The flag wins over the file: the bad value is never looked at.
    result = run_server({"DATABASE_URL": UNREACHABLE}, tmp_path)
    assert "eighty" not in result.stderr and "cannot connect" in result.stderr


def test_environment_beats_dotenv_beats_config_yaml_and_flags_beat_all(
    database_url: str, tmp_path: Path
) -> None:
    # config.yaml: a wrong database and debug on; .env: the right database.
    (tmp_path / "config.yaml").write_text(
        f"database_url: {UNREACHABLE}\ndebug: true\nhost: 256.0.0.1\n"
    )
    (tmp_path / ".env").write_text(f"DATABASE_URL={database_url}\n")

    # 1. .env over config.yaml (no DATABASE_URL in the environment): starts, debug on.
    server = start_server_process({}, cwd=tmp_path)
    try:
        assert server.url.startswith("http://127.0.0.1:")  # --host beat config.yaml's host
    finally:
        assert stop_server_process(server) == 0
    levels = {json.loads(line)["level"] for line in server.lines if line.startswith("{")}
    assert "debug" in levels  # config.yaml's debug: true applies

    # 2. The environment over .env: the wrong database wins, startup fails in one line.
    result = run_server({"DATABASE_URL": UNREACHABLE.replace(":1/", ":2/")}, tmp_path)
    assert result.returncode == 1
    assert "127.0.0.1:2" in result.stderr and len(result.stderr.splitlines()) == 1

    # 3. A flag over the environment: starts again. DEBUG=false in the environment turns
    #    config.yaml's debug: true off (the original could not set a bool back to false).
    server = start_server_process(
        {"DATABASE_URL": UNREACHABLE, "DEBUG": "false"}, cwd=tmp_path,
        args=["--database-url", database_url],
    )
    assert stop_server_process(server) == 0
    levels = {json.loads(line)["level"] for line in server.lines if line.startswith("{")}
    assert "debug" not in levels


async def test_logs_and_graceful_shutdown_with_an_open_watch(server_process: ServerProcess) -> None:
    url = server_process.url
    listening = json.loads(next(line for line in server_process.lines if '"listening"' in line))
    assert listening["app"] == "cara-server" and listening["address"] in url
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/v1/projects", json=manifest("web")) as resp:
            assert resp.status == 201
        watch = await session.get(
            f"{url}/api/v1/projects",
            params={"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "600"},
            timeout=aiohttp.ClientTimeout(total=None),
        )
        first = json.loads(await watch.content.readline())
        assert first["type"] == "ADDED"
        server_process.proc.send_signal(signal.SIGTERM)
        # The stream ends cleanly (terminating chunk) well before its own timeout.
        async with asyncio.timeout(15):
            rest = await watch.read()
        # Then only bookmarks, or the scheduler marking the project Unschedulable (no node).
        for line in filter(None, rest.splitlines()):
            event = json.loads(line)
            assert event["type"] == "BOOKMARK" or (
                event["type"] == "MODIFIED" and event["object"]["metadata"]["name"] == "web"
            ), event
        watch.release()
    code = await asyncio.to_thread(stop_server_process, server_process, send_signal=False)
    assert code == 0
    events = [json.loads(line) for line in server_process.lines if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert "shutdown.started" in kinds and kinds[-1] == "shutdown.complete"
    # Routine requests log at debug (only failed or slow ones at info); the write has its
    # audit line.
    audit = next(e for e in events if e["event"] == "audit" and e["verb"] == "create")
    assert (audit["resource"], audit["result"]) == ("projects", 201)
    requests = [e for e in events if e["event"] == "request"]
    assert all(
        {"method", "path", "status", "duration_ms"} <= set(e)
        and (e["status"] >= 400 or e["duration_ms"] >= 1000)
        for e in requests
    ), requests
    watch_lines = [e for e in events if e["event"].startswith("watch.")]
    assert [e["event"] for e in watch_lines] == ["watch.started", "watch.ended"]
    assert watch_lines[1]["reason"] == "shutdown"


def test_busy_port_is_one_line_and_exit_1(
    server_process: ServerProcess, database_url: str, tmp_path: Path
) -> None:
    port = server_process.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [CARA_SERVER, "--host", "127.0.0.1", "--port", port, "--database-url", database_url],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cara-server: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


def test_otel_collector_url_without_opentelemetry_is_a_warning(
    database_url: str, tmp_path: Path
) -> None:
    server = start_server_process(
        {"DATABASE_URL": database_url, "OTEL_COLLECTOR_URL": "http://127.0.0.1:4317"},
        cwd=tmp_path,
    )
    assert stop_server_process(server) == 0
    events = {json.loads(line)["event"]: json.loads(line) for line in server.lines
              if line.startswith("{")}
    try:
        import opentelemetry.sdk  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        assert events["tracing.unavailable"]["level"] == "warning"
    else:
        assert "tracing.enabled" in events
