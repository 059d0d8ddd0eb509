"""``cara-server --dev`` pieces that need no Docker or PostgreSQL (the whole program runs in
tests/e2e/test_dev_mode.py and tests/e2e/test_quickstart.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from caravanserai.server import dev
from caravanserai.server.dev import (
    Database,
    DevError,
    DockerEngine,
    Started,
    banner,
    find_docker,
    plan_agent,
)
from caravanserai.server.main import main


def _started(server_url: str = "http://127.0.0.1:8080") -> Started:
    return Started(
        server_url=server_url,
        database=Database("postgresql://x", "embedded PostgreSQL 18.4 on 127.0.0.1:5, data in /d"),
        docker=DockerEngine("unix:///var/run/docker.sock", "27.0", "the default socket"),
        node="node-01",
        agent_pid=42,
        proxy_address="127.0.0.1:8081",
        images=["cara-example/web:latest"],
    )


def test_banner_says_what_runs_and_how_to_use_it() -> None:
    text = banner(_started())
    assert "server    http://127.0.0.1:8080" in text
    assert "node      node-01 (cara-agent pid 42, ingress proxy on 127.0.0.1:8081)" in text
    assert "caractrl apply -f" in text and "blog.yaml" in text
    assert "curl -H 'Host: blog.example.com' http://localhost:8081/" in text
    assert "Containers keep running" in text
    # caractrl's default server is http://localhost:8080: nothing to export.
    assert "CARA_SERVER" not in text


def test_banner_tells_to_export_the_server_on_another_port() -> None:
    assert "export CARA_SERVER=http://127.0.0.1:18080" in banner(
        _started("http://127.0.0.1:18080")
    )


@pytest.mark.parametrize(("host", "url"), [
    ("0.0.0.0", "http://127.0.0.1:8080"),
    ("127.0.0.1", "http://127.0.0.1:8080"),
    ("::", "http://[::1]:8080"),
    ("10.0.0.5", "http://10.0.0.5:8080"),
])
def test_client_url(host: str, url: str) -> None:
    assert dev._client_url(host, 8080) == url


def test_data_dir_is_in_the_user_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000)
    assert dev.dev_data_dir() == tmp_path / "caravanserai" / "postgres"


def test_data_dir_as_root_avoids_unreachable_homes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostgreSQL runs as cara-postgres then, which cannot traverse e.g. /root (0700)."""
    from caravanserai.store.embedded import default_data_dir

    monkeypatch.setattr(dev.os, "geteuid", lambda: 0)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_DATA_HOME", str(private / "share"))
    assert dev.dev_data_dir() == default_data_dir()

    # Every parent traversable (pytest's tmp_path is below /tmp/pytest-of-root, 0700).
    reachable = Path(tempfile.mkdtemp(prefix="cara-unit-"))
    try:
        reachable.chmod(0o711)
        monkeypatch.setenv("XDG_DATA_HOME", str(reachable))
        assert dev.dev_data_dir() == reachable / "caravanserai" / "postgres"
    finally:
        reachable.rmdir()


async def test_agent_plan_forces_server_node_and_engine_and_defaults_to_loopback() -> None:
    plan = await plan_agent(
        {"SERVER_URL": "http://elsewhere:1", "NODE_NAME": "other", "PATH": "/bin"},
        server_url="http://127.0.0.1:8080", node="node-01",
        docker_host="unix:///var/run/cara-docker/cara.sock",
    )
    assert plan.env["SERVER_URL"] == "http://127.0.0.1:8080"
    assert plan.env["NODE_NAME"] == "node-01"
    assert plan.env["DOCKER_HOST"] == "unix:///var/run/cara-docker/cara.sock"
    assert plan.env["AGENT_LISTEN_HOST"] == "127.0.0.1"
    assert plan.proxy == "127.0.0.1:8081"
    assert plan.listen == "127.0.0.1:9090"
    assert plan.args[1:4] == ["-m", "agent", "--config"]


async def test_agent_plan_keeps_the_users_agent_settings() -> None:
    plan = await plan_agent(
        {"PROXY_LISTEN_ADDR": "0.0.0.0:9999", "AGENT_LISTEN_PORT": "9191"},
        server_url="http://127.0.0.1:8080", node="n", docker_host="unix:///x.sock",
    )
    assert plan.proxy == "0.0.0.0:9999"
    assert plan.listen == "127.0.0.1:9191"


async def test_agent_plan_reports_bad_agent_settings_in_one_line() -> None:
    with pytest.raises(DevError, match="cara-agent configuration: heartbeat_interval"):
        await plan_agent({"HEARTBEAT_INTERVAL": "soon"}, server_url="http://127.0.0.1:8080",
                   node="n", docker_host="unix:///x.sock")


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The Docker hosts that answer (probe_docker faked)."""
    answering: set[str] = set()

    async def probe(host: str) -> str | None:
        return "27.0" if host in answering else None

    monkeypatch.setattr(dev, "probe_docker", probe)
    return answering


async def test_docker_host_is_used_when_it_answers(engines: set[str]) -> None:
    engines.update({"tcp://10.0.0.1:2375", dev.DEFAULT_DOCKER_HOST})
    engine = await find_docker({"DOCKER_HOST": "tcp://10.0.0.1:2375"})
    assert (engine.host, engine.origin) == ("tcp://10.0.0.1:2375", "from DOCKER_HOST")


async def test_default_socket_when_docker_host_does_not_answer(engines: set[str]) -> None:
    engines.add(dev.DEFAULT_DOCKER_HOST)
    engine = await find_docker({"DOCKER_HOST": "tcp://10.0.0.1:2375"})
    assert (engine.host, engine.origin) == (dev.DEFAULT_DOCKER_HOST, "the default socket")


async def test_no_engine_and_no_checkout_says_how_to_start_docker(
    engines: set[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dev, "DOCKER_UP", tmp_path / "missing" / "docker-up.sh")
    with pytest.raises(DevError) as info:
        await find_docker({})
    message = str(info.value)
    assert "\n" not in message
    assert "no Docker engine answers at unix:///var/run/docker.sock" in message
    assert "start Docker" in message and "DOCKER_HOST" in message


async def test_private_engine_from_docker_up(
    engines: set[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "docker-up.sh"
    script.write_text("echo 'docker-up: progress' >&2\necho 'export DOCKER_HOST=unix:///p.sock'\n")
    monkeypatch.setattr(dev, "DOCKER_UP", script)
    monkeypatch.setattr(dev.os, "geteuid", lambda: 0)
    engines.add("unix:///p.sock")
    engine = await find_docker({})
    assert (engine.host, engine.origin) == (
        "unix:///p.sock", "private engine of hack/docker-up.sh"
    )


def test_dev_only_flags_need_dev() -> None:
    result = CliRunner().invoke(main, ["--node-name", "x"], env={"DATABASE_URL": "postgresql://h/d"})
    assert result.exit_code == 2
    assert "only apply with --dev" in result.output
    result = CliRunner().invoke(main, ["-v"], env={"DATABASE_URL": "postgresql://h/d"})
    assert result.exit_code == 2 and "only apply with --dev" in result.output


def test_help_mentions_dev() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "--dev" in result.output and "--node-name" in result.output


@pytest.mark.parametrize(("ran", "line"), [
    ((True, True, True), "stopped the agent, the server and the database; containers keep running"),
    ((True, True, False), "stopped the agent and the server; containers keep running"),
    ((False, False, True), "stopped the database"),
    ((False, False, False), "stopped before anything was up"),
])
def test_the_line_after_ctrl_c_names_what_was_stopped(
    ran: tuple[bool, bool, bool], line: str
) -> None:
    assert dev._stopped_line(*ran) == f"cara-server --dev: {line}"


def test_logs_are_next_to_the_data_directory_and_named_in_the_banner(tmp_path: Path) -> None:
    logs = dev.dev_logs(dev.DevOptions(data_dir=tmp_path / "pg"))
    assert logs.server == tmp_path / "logs" / "cara-server.log"
    assert logs.agent == tmp_path / "logs" / "cara-agent.log"
    assert logs.postgres == tmp_path / "pg" / "server.log"
    started = _started()
    started.database.embedded = True
    started.logs = logs
    text = banner(started)
    for path in (logs.server, logs.agent, logs.postgres):
        assert str(path) in text
    assert "-v streams them" in text


async def test_private_engine_started_here_is_named_with_how_to_stop_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "docker-up.sh"
    script.write_text("exit 0\n")
    monkeypatch.setattr(dev, "DOCKER_UP", script)
    monkeypatch.setattr(dev.os, "geteuid", lambda: 0)
    ran: list[list[str]] = []

    async def run_script(args: list[str], *_: object, **__: object) -> tuple[int, str]:
        ran.append(args)
        return 0, f"export DOCKER_HOST={dev.PRIVATE_ENGINE_HOST}\n"

    async def probe(host: str) -> str | None:
        # Only the private engine, and only once docker-up has run.
        return "27.0" if host == dev.PRIVATE_ENGINE_HOST and ran else None

    monkeypatch.setattr(dev, "_run_script", run_script)
    monkeypatch.setattr(dev, "probe_docker", probe)
    engine = await find_docker({})
    assert ran == [[str(script), "cara"]]
    assert engine.started_here
    note = dev.private_engine_note(engine)
    assert note is not None and "docker-down.sh cara" in note and "keeps running" in note
    # Found running already (another --dev started it): not ours to mention.
    engine = await find_docker({})
    assert not engine.started_here and dev.private_engine_note(engine) is None
