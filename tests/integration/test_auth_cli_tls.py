"""caractrl against a server that needs tokens (``caractrl token ...``, roles as a user meets
them) and over TLS with a private CA (``--tls-cert-file``, ``--certificate-authority``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from server_support import start_server_process, stop_server_process

CARACTRL = str(Path(sys.executable).with_name("caractrl"))
ADMIN = "cara_admin-for-the-cli-test"


def caractrl(env: dict[str, str], *args: str, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CARACTRL, *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


def cli_env(tmp_path: Path, server: str, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARA_")}
    env |= {"CARA_SERVER": server, "CARA_CONFIG": str(tmp_path / "caractrl.yaml")}
    if token:
        env["CARA_TOKEN"] = token
    return env


@pytest.fixture
def secured_server(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    server = start_server_process(
        {"DATABASE_URL": database_url, "CARA_INSECURE_ALLOW_ANONYMOUS": "false",
         "CARA_API_TOKEN": ADMIN},
        cwd=tmp_path,
    )
    try:
        yield server
    finally:
        stop_server_process(server)


def test_token_commands_and_roles(secured_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    admin = cli_env(tmp_path, secured_server.url, ADMIN)
    r = caractrl(admin, "token", "create", "alice", "--role", "view", "--ttl", "24h")
    assert r.returncode == 0, r.stderr
    alice = r.stdout.strip()
    assert alice.startswith("cara_") and "shown only now" in r.stderr

    r = caractrl(admin, "token", "list")
    assert r.returncode == 0 and "alice" in r.stdout and "view" in r.stdout
    assert alice not in r.stdout

    viewer = cli_env(tmp_path, secured_server.url, alice)
    assert caractrl(viewer, "get", "projects").returncode == 0
    r = caractrl(viewer, "delete", "project", "nope")
    assert (r.returncode, r.stderr) == (
        1, 'Error: token "alice" has role view, which may not delete projects "nope": '
        "that needs role edit\n"
    )
    r = caractrl(viewer, "token", "list")
    assert r.returncode != 0 and "Traceback" not in r.stderr

    r = caractrl(admin, "token", "revoke", "alice")
    assert r.returncode == 0 and "revoked" in r.stdout
    r = caractrl(viewer, "get", "projects")
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1

    anonymous = cli_env(tmp_path, secured_server.url, None)
    r = caractrl(anonymous, "get", "projects")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    # set-token from stdin (what cara-server --dev uses), then it works.
    r = caractrl(anonymous, "config", "set-token", "-", stdin=ADMIN + "\n")
    assert r.returncode == 0, r.stderr
    assert caractrl(anonymous, "get", "projects").returncode == 0


def test_tls_with_a_private_ca(database_url: str, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = start_server_process(
        {"DATABASE_URL": database_url}, cwd=tmp_path,
        args=["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)],
    )
    try:
        url = server.url.replace("http://", "https://")
        env = cli_env(tmp_path, url, None)
        r = caractrl(env, "--certificate-authority", str(ca_file), "get", "projects")
        assert r.returncode == 0, r.stderr
        # Without the CA the certificate is not trusted: one line, no traceback.
        r = caractrl(env, "get", "projects")
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert "certificate" in r.stderr.lower()
        r = caractrl(env, "config", "set-certificate-authority", str(ca_file))
        assert r.returncode == 0, r.stderr
        assert caractrl(env, "get", "projects").returncode == 0
        # Plain HTTP is not served on the TLS port.
        r = caractrl(cli_env(tmp_path, server.url, None), "get", "projects")
        assert r.returncode != 0
    finally:
        stop_server_process(server)


def test_a_half_tls_configuration_is_one_line(database_url: str, tmp_path: Path) -> None:
    r = subprocess.run(
        [str(Path(sys.executable).with_name("cara-server")), "--port", "0",
         "--database-url", database_url, "--tls-cert-file", str(tmp_path / "missing.pem")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("CARA_")},
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "cara-server: TLS needs both a certificate file and a key file"
    ]
