"""Shared harness of the benchmarks in hack/bench (api.py, apply.py, schedule.py, store.py).

It holds what every benchmark repeated:

- ``ROOT``, the repository, put on ``sys.path`` on import so ``caravanserai`` imports from the
  working tree, and ``BIN``, the directory of the venv's programs (``cara-server``, ...);
- ``postgres(dsn)``: the given superuser DSN, or the test suite's embedded PostgreSQL (its
  test settings: fsync off, ...; plus ``track_commit_timestamp`` so benchmarks can measure
  from a write's commit) in a temporary directory for the run;
- ``commit_times(dsn, revisions)``: when each revision's transaction committed (wall clock,
  from PostgreSQL's commit timestamps), where the server tracks them;
- ``scratch_database(admin)``: a fresh database, dropped afterwards;
- ``free_port()`` and ``terminate(proc)`` for the subprocesses a benchmark runs;
- ``pct`` (nearest-rank percentile) and ``ms`` (seconds formatted as milliseconds, signed).

The benchmarks run as scripts (``.venv/bin/python hack/bench/X.py``), so this directory is
first on ``sys.path`` and they import it as ``harness``.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
CARA_SERVER = str(BIN / "cara-server")


@contextlib.contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    """A superuser DSN: the given one, or an embedded server for the run."""
    if dsn:
        yield dsn
        return
    from caravanserai.store.embedded import TEST_SETTINGS, start_embedded

    base = tempfile.mkdtemp(prefix="cara-bench-pg-")
    os.chmod(base, 0o711)
    settings = {**TEST_SETTINGS, "track_commit_timestamp": "on"}
    try:
        url, stop = start_embedded(os.path.join(base, "data"), settings=settings)
        try:
            yield url
        finally:
            stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    """A new database on the ``admin`` server (its DSN), dropped (FORCE) on exit."""
    name = f"cara_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield psycopg.conninfo.make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port on 127.0.0.1 free just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process if still running; kill it if it has not exited in ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def commit_times(dsn: str, revisions: Iterable[int]) -> dict[int, float] | None:
    """Wall-clock commit time (epoch seconds) of each revision's write, read from the event
    log's commit timestamps; None when the server runs without ``track_commit_timestamp``.

    A write's event row is inserted in the write's own transaction, so its ``xmin`` commit
    timestamp is the write's commit. Compare with ``time.time()`` on the same host only.
    """
    wanted = sorted(set(revisions))
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(b"SHOW track_commit_timestamp").fetchone()
        if not row or row[0] != "on" or not wanted:
            return None
        rows = conn.execute(
            b"SELECT revision, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 "
            b"FROM cara_events WHERE revision = ANY(%s)",
            (wanted,),
        ).fetchall()
    return {int(r): float(t) for r, t in rows if t is not None}


def pct(values: list[float], p: float) -> float:
    """The p-th percentile by nearest rank (the smallest value with at least p% of the
    values at or below it: index ceil(p/100 * n) - 1 of the sorted values); NaN if none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def ms(value: float) -> str:
    """Seconds as a fixed-width, signed milliseconds figure: ``'  +1.23 ms'``."""
    return f"{value * 1000:+8.2f} ms"
