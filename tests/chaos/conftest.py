"""Fixtures of the HA and chaos tests: a PostgreSQL primary + standby, PgBouncer, HAProxy.

The processes come from ``ha_components.py``; PgBouncer and HAProxy are Debian packages
(``hack/install-ha-tools.sh``), missing ones skip locally and FAIL in CI (``CI=true``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # agent/cluster helpers

from agent_e2e_support import docker_host  # noqa: F401 - the e2e suite's engine fixture
from ha_components import HAProxy, PgBouncer, PgPair, require_tool


@pytest.fixture
def pg_pair(skip_or_fail: Callable[[str], NoReturn]) -> Iterator[PgPair]:
    """A primary and a streaming standby of its own (fresh for each test)."""
    try:
        pair = PgPair.start()
    except Exception as exc:  # no binaries, no pg_basebackup: a broken setup, not a pass
        skip_or_fail(f"cannot start a PostgreSQL primary + standby: {exc}")
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="session")
def pgbouncer_bin(skip_or_fail: Callable[[str], NoReturn]) -> str:
    return require_tool("pgbouncer", skip_or_fail)


@pytest.fixture(scope="session")
def haproxy_bin(skip_or_fail: Callable[[str], NoReturn]) -> str:
    return require_tool("haproxy", skip_or_fail)


@pytest.fixture
def pgbouncer(pg_pair: PgPair, pgbouncer_bin: str) -> Iterator[PgBouncer]:
    """PgBouncer (transaction mode) in front of the pair's primary."""
    # In the pair's directory: the unprivileged user must reach its files (tmp_path is 0700).
    bouncer = PgBouncer(pgbouncer_bin, pg_pair.base / "pgbouncer", pg_pair.primary_port)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


__all__ = ["HAProxy"]
