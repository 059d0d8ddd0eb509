"""``get -o jsonpath=…``, ``-o custom-columns=…`` and ``--sort-by`` against a real server."""

from __future__ import annotations

from test_cli_e2e import PROJECT_YAML, WORDPRESS_YAML, Server, caractrl, env, server

__all__ = ["env", "server"]  # fixtures used by name


def test_jsonpath_custom_columns_and_sort_by(server: Server, env: dict[str, str]) -> None:
    both = WORDPRESS_YAML + "---\n" + PROJECT_YAML
    assert caractrl(env, "apply", "-f", "-", stdin=both).returncode == 0

    r = caractrl(env, "get", "projects", "--sort-by=.metadata.name",
                 "-o", "jsonpath={.items[*].metadata.name}")
    assert (r.returncode, r.stdout) == (0, "my-project wordpress\n"), r.stderr
    r = caractrl(env, "get", "projects", "wordpress",
                 "-o", "jsonpath={.metadata.labels.app} {.status.phase}")
    assert r.stdout == "blog Pending\n"
    r = caractrl(env, "get", "projects", "--sort-by", ".metadata.name",
                 "-o", "custom-columns=NAME:.metadata.name,IMAGE:.spec.services[*].image")
    assert r.stdout.splitlines() == [
        "NAME         IMAGE",
        "my-project   nginx:alpine",
        "wordpress    mysql:8,wordpress:latest",
    ]
    r = caractrl(env, "get", "projects", "-o", "jsonpath={.items[")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
