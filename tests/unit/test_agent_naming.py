"""Docker naming and ingress host resolution (seed: "Docker resource naming", spec.ingress)."""

from __future__ import annotations

import pytest

from agent import naming


def test_names_follow_the_seed() -> None:
    assert naming.network_name("wordpress") == "cara-wordpress"
    assert naming.container_name("wordpress", "db") == "wordpress-db"
    assert naming.volume_name("wordpress", "mysql-data") == "cara-wordpress-mysql-data"


def test_project_labels() -> None:
    assert naming.project_labels("p", "node-1", "u-1") == {
        "cara.project": "p",
        "cara.node": "node-1",
        "cara.uid": "u-1",
    }
    assert "cara.uid" not in naming.project_labels("p", "n", None)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("blog.example.com", "blog.example.com"),  # a dot: verbatim
        ("admin", "admin.dev.cara.local"),  # no dot: {host}.{environment}.{baseDomain}
        ("Admin", "admin.dev.cara.local"),  # hostnames are case-insensitive
        ("Blog.Example.COM.", "blog.example.com"),  # the DNS root dot is dropped
    ],
)
def test_resolve_host(host: str, expected: str) -> None:
    assert naming.resolve_host(host, "dev", "cara.local") == expected


def test_resolve_host_with_other_environment() -> None:
    assert naming.resolve_host("web", "prod", "example.org") == "web.prod.example.org"
    assert naming.resolve_host("web", "", "example.org") == "web.example.org"


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("admin.dev.cara.local", "admin.dev.cara.local"),
        ("admin.dev.cara.local:8081", "admin.dev.cara.local"),
        ("ADMIN.dev.cara.local.", "admin.dev.cara.local"),
        ("[::1]:8081", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_host_from_header(header: str, host: str) -> None:
    assert naming.host_from_header(header) == host
