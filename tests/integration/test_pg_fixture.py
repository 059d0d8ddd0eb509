"""The PostgreSQL fixture: which backend a session got, and the local test image.

``CARA_TEST_PG=container|embedded`` must give exactly that backend (CI runs the e2e suite
with ``container``); the tests below check it from the outside, not just by asking the
fixture: a container's server is found through the Docker engine and reports the image's
data directory, the embedded one runs from a temporary directory on this host.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import psycopg
import pytest

TEST_IMAGE = "cara-test/postgres:latest"
OWNER_LABEL = "io.caravanserai.test.pg-owner"  # tests/conftest.py labels its container so
IMAGE_PGDATA = "/var/lib/postgresql/data"


def _mode() -> str:
    return os.environ.get("CARA_TEST_PG", "").strip().lower() or "auto"


def _show(dsn: str, setting: str) -> str:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def test_backend_follows_cara_test_pg(pg_backend: str) -> None:
    mode = _mode()
    if mode == "auto":
        assert pg_backend in ("url", "container", "embedded")
    else:
        assert pg_backend == mode, f"CARA_TEST_PG={mode} but the session got {pg_backend}"


def test_container_backend_is_this_sessions_container(
    pg_backend: str, pg_admin_url: str, skip_or_fail: Callable[[str], NoReturn]
) -> None:
    if pg_backend != "container":  # CI runs with CARA_TEST_PG=container: this must run there
        skip_or_fail(f"this session's PostgreSQL is {pg_backend}, not a container")
    import docker

    client = docker.from_env(timeout=10)
    mine = client.containers.list(
        filters={"label": f"{OWNER_LABEL}={socket.gethostname()}:{os.getpid()}"}
    )
    assert len(mine) == 1, f"want exactly one running container of this session, got {mine}"
    c = mine[0]
    assert c.attrs["Config"]["Image"] == TEST_IMAGE  # (the tag may since have moved on)
    # The DSN's port is the container's published 5432/tcp.
    published = {int(b["HostPort"]) for b in c.ports["5432/tcp"]}
    assert urlsplit(pg_admin_url).port in published
    # And the server behind it is the image's: its data directory, durability off.
    assert _show(pg_admin_url, "data_directory") == IMAGE_PGDATA
    assert _show(pg_admin_url, "fsync") == "off"
    assert _show(pg_admin_url, "max_connections") == "300"  # the fixture's command line
    with psycopg.connect(pg_admin_url, connect_timeout=10) as conn:
        row = conn.execute("SELECT host(inet_server_addr())").fetchone()
    assert row is not None
    container_ips = {n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values()}
    assert row[0] in container_ips  # the connection ends inside the container


def test_embedded_backend_runs_on_this_host() -> None:
    """The embedded wheel (the fixture's fallback and ``cara-server --dev``'s database) runs
    on this host whatever backend this session uses, and keeps its data across restarts."""
    from caravanserai.store.embedded import start_embedded

    # Not pytest's tmp_path: as root the server runs as an unprivileged user, which must be
    # able to traverse every parent directory.
    data_dir = Path(tempfile.mkdtemp(prefix="cara-test-embedded-")) / "pg"
    os.chmod(data_dir.parent, 0o755)
    dsn, stop = start_embedded(data_dir)
    try:
        served = _show(dsn, "data_directory")
        assert os.path.realpath(served) == os.path.realpath(data_dir)
        assert os.path.isfile(os.path.join(served, "PG_VERSION"))  # on our filesystem
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE kept (x int)")
    finally:
        stop()
    dsn, stop = start_embedded(data_dir)
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    finally:
        stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


# -- the image itself, through testcontainers ------------------------------------------------


@pytest.fixture
def own_container(skip_or_fail: Callable[[str], NoReturn]) -> Iterator[Any]:
    """A second cara-test/postgres container with non-default credentials."""
    try:
        import docker

        docker.from_env(timeout=3).images.get(TEST_IMAGE)
    except Exception as exc:
        skip_or_fail(f"no Docker engine or no {TEST_IMAGE} (hack/build-images.sh): {exc}")
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.config import testcontainers_config

    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True  # the image would be pulled
    container = PostgresContainer(
        TEST_IMAGE, username="cara", password="it's-s3cret", dbname="appdb", driver=None
    ).with_kwargs(labels={OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"})
    with container:
        yield container


def test_image_honours_user_password_db_and_stops_fast(own_container: Any) -> None:
    url = own_container.get_connection_url()
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_user, current_database(), current_setting('fsync')")
        assert row.fetchone() == ("cara", "appdb", "off")
        # This session stays open: PostgreSQL's own SIGTERM handling would wait for it.
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url, password="wrong", connect_timeout=10).close()
        wrapped = own_container.get_wrapped_container()
        wrapped.stop(timeout=10)  # SIGTERM, then SIGKILL after 10 s
    wrapped.reload()
    # Exit 0, not 137: the server shut down on SIGTERM itself, with the session still open
    # (a "smart" shutdown would wait for it until docker's SIGKILL). No stopwatch needed.
    assert wrapped.attrs["State"]["ExitCode"] == 0
