"""``caractrl label`` and ``caractrl annotate`` against a real server, as kubectl behaves."""

from __future__ import annotations

from test_cli_e2e import (  # type: ignore[import-not-found]
    PROJECT_YAML,
    Server,
    caractrl,
    env,
    invoke,
    register_node,
    server,
)

from caravanserai.client.http import CaravanseraiClient

__all__ = ["env", "server"]  # fixtures


def labels_of(srv: Server, kind: str, name: str, field: str = "labels") -> dict[str, str]:
    async def go(c: CaravanseraiClient) -> dict[str, str]:
        res = c.projects if kind == "project" else c.nodes
        return dict(getattr((await res.get(name)).metadata, field))

    return srv.api(go)  # type: ignore[no-any-return]


def test_label_sets_refuses_overwrite_and_removes(server: Server, env: dict[str, str]) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    name = next(iter(_names(server)))
    r = caractrl(env, "label", "project", name, "tier=web", "team=a")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"project/{name} labeled"
    assert labels_of(server, "project", name) == {"tier": "web", "team": "a"}

    r = caractrl(env, "label", "project", name, "tier=db")
    assert r.returncode != 0
    assert "--overwrite is false" in r.stderr and "Traceback" not in r.stderr
    assert labels_of(server, "project", name)["tier"] == "web"

    r = invoke(env, "label", "project", name, "tier=db", "team-", "--overwrite")
    assert r.exit_code == 0, r.output
    assert labels_of(server, "project", name) == {"tier": "db"}
    assert invoke(env, "label", "project", name, "tier=db").output.strip() == (
        f"project/{name} not labeled"
    )


def test_annotate_nodes_and_bad_arguments(server: Server, env: dict[str, str]) -> None:
    register_node(server, "node-01")
    r = invoke(env, "annotate", "node", "node-01", "owner=alice")
    assert r.exit_code == 0, r.output
    assert labels_of(server, "node", "node-01", "annotations") == {"owner": "alice"}
    assert invoke(env, "annotate", "node", "node-01", "owner-").exit_code == 0
    assert labels_of(server, "node", "node-01", "annotations") == {}

    for args in (("owner",), ("=x",), ("a=1", "a-")):
        r = caractrl(env, "annotate", "node", "node-01", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
    r = caractrl(env, "label", "node", "nope", "a=1")
    assert r.returncode == 1 and "not found" in r.stderr
    r = caractrl(env, "label", "node", "node-01", "bad key!=1")
    assert r.returncode == 1 and "Traceback" not in r.stderr


def _names(srv: Server) -> list[str]:
    async def go(c: CaravanseraiClient) -> list[str]:
        return [p.metadata.name for p in (await c.projects.list()).items]

    return srv.api(go)  # type: ignore[no-any-return]
