"""Failover decisions without a database: when history counts as lost, what a broken
connection becomes, and what a client is told (503 + Retry-After)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from caravanserai.api.problems import Unavailable
from caravanserai.api.watch import EventType
from caravanserai.server.app import create_app
from caravanserai.server.config import ServerConfig, load_config
from caravanserai.store.failover import POOL_CONNECTION_KWARGS, history_lost
from caravanserai.store.hub import db_errors
from caravanserai.store.types import StoreEvent


def event(revision: int, name: str = "web", spec: str = "a") -> StoreEvent:
    obj = {"kind": "Project", "metadata": {"name": name}, "spec": {"x": spec}}
    return StoreEvent(revision=revision, kind="Project", name=name, type=EventType.ADDED,
                      object=obj, old_object=None)


def stored(ev: StoreEvent) -> tuple[Any, ...]:
    return (ev.kind, ev.name, str(ev.type), ev.object)


def test_counter_below_what_was_served_is_lost_history() -> None:
    assert history_lost(10, event(10), current=7, stored=None)
    assert history_lost(10, None, current=9, stored=None)


def test_same_event_under_head_is_the_same_history() -> None:
    ev = event(10)
    assert not history_lost(10, ev, current=10, stored=stored(ev))
    assert not history_lost(10, ev, current=25, stored=stored(ev)), "others wrote meanwhile"


def test_another_event_under_head_means_the_numbers_were_reused() -> None:
    """The new primary lost 8..10, then other replicas wrote past 10 before we reconnected:
    the counter alone cannot tell, the event stored under 10 can."""
    served = event(10, "web", "a")
    assert history_lost(10, served, current=12, stored=stored(event(10, "db", "a")))
    assert history_lost(10, served, current=12, stored=stored(event(10, "web", "b")))


def test_nothing_to_compare_trusts_the_counter() -> None:
    assert not history_lost(10, None, current=10, stored=None)
    assert not history_lost(10, event(9), current=11, stored=None), "ring was compacted"


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("server closed the connection unexpectedly"),
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
])
def test_connection_trouble_is_unavailable(exc: Exception) -> None:
    with pytest.raises(Unavailable, match="database unavailable"), db_errors():
        raise exc


def test_pool_connections_never_prepare() -> None:
    assert POOL_CONNECTION_KWARGS["prepare_threshold"] is None


def test_listen_database_url_setting(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://pgbouncer/cara",
           "CARA_LISTEN_DATABASE_URL": "host=a,b target_session_attrs=read-write"}
    config = load_config(environ=env, cwd=tmp_path)
    assert config.listen_database_url == "host=a,b target_session_attrs=read-write"
    assert load_config(environ={"DATABASE_URL": "x"}, cwd=tmp_path).listen_database_url is None


class DownStore:
    async def get(self, kind: str, name: str) -> dict[str, Any]:
        with db_errors():
            raise psycopg.OperationalError("connection to server failed")


async def test_database_down_answers_503_with_retry_after() -> None:
    app = create_app(ServerConfig(insecure_allow_anonymous=True), DownStore())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/projects/web")
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        body = await resp.json()
        assert resp.content_type == "application/problem+json"
        assert "database unavailable" in body["detail"]
