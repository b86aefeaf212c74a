"""Test infrastructure: the real MariaDB/MySQL and Redis from the environment.

``PENPAY_DATABASE_URL`` and ``PENPAY_REDIS_URL`` (defaults: 127.0.0.1, as in .env.example) name the servers. Each
pytest-xdist worker gets its own throwaway database (``<name>_test_<worker>``), created and migrated once per
session and dropped at the end. Where those servers are unreachable and a Docker engine exists, testcontainers
starts MySQL 8 and Redis 7 instead; otherwise the session stops with one line saying what to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from penpay.adapters.db import schema
from penpay.adapters.db.engine import create_engine, drop_database
from penpay.bootstrap import Database, SystemClock
from penpay.settings import Settings
from tests.redis_keys import drop_keys

DEFAULT_DB = "mysql+asyncmy://root:@127.0.0.1:3306/penpay"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


async def _db_reachable(url: str) -> str | None:
    engine = create_engine(make_url(url).set(database="").render_as_string(hide_password=False), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]
    finally:
        await engine.dispose()


async def _redis_reachable(url: str) -> str | None:
    client = aioredis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return str(exc)
    finally:
        await client.aclose()


def _docker_available() -> bool:
    return shutil.which("docker") is not None and Path("/var/run/docker.sock").exists()


@pytest.fixture(scope="session")
def service_urls() -> Iterator[tuple[str, str]]:
    db_url = os.environ.get("PENPAY_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("PENPAY_REDIS_URL", DEFAULT_REDIS)
    db_problem = asyncio.run(_db_reachable(db_url))
    redis_problem = asyncio.run(_redis_reachable(redis_url))
    if not db_problem and not redis_problem:
        yield db_url, redis_url
        return
    if not _docker_available():
        where = []
        if db_problem:
            where.append(f"MySQL/MariaDB at {make_url(db_url).render_as_string(hide_password=True)} ({db_problem})")
        if redis_problem:
            where.append(f"Redis at {redis_url} ({redis_problem})")
        pytest.exit(
            "cannot reach " + " and ".join(where) + "; start them (see README: 'What make test needs') "
            "or set PENPAY_DATABASE_URL / PENPAY_REDIS_URL",
            returncode=3,
        )
    from testcontainers.mysql import MySqlContainer  # noqa: PLC0415 - only where Docker exists
    from testcontainers.redis import RedisContainer  # noqa: PLC0415

    with (
        MySqlContainer("mysql:8.0", username="root", password="test", dbname="penpay") as mysql_c,
        RedisContainer("redis:7") as redis_c,
    ):
        host, port = mysql_c.get_container_host_ip(), mysql_c.get_exposed_port(3306)
        r_host, r_port = redis_c.get_container_host_ip(), redis_c.get_exposed_port(6379)
        yield f"mysql+asyncmy://root:test@{host}:{port}/penpay", f"redis://{r_host}:{r_port}/0"


@pytest.fixture(scope="session")
def worker_id_suffix(request: pytest.FixtureRequest) -> str:
    """The xdist worker plus a per-run tag, so two runs on one server (a developer's and CI's) never share a
    database or a Redis key."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    return f"{worker}_{os.getpid()}"


@pytest.fixture(scope="session")
def database_url(service_urls: tuple[str, str], worker_id_suffix: str) -> Iterator[str]:
    """A throwaway database for this test worker, migrated to head; dropped at the end of the session."""
    base = make_url(service_urls[0])
    url = base.set(database=f"{base.database or 'penpay'}_test_{worker_id_suffix}").render_as_string(
        hide_password=False
    )
    asyncio.run(drop_database(url))
    schema.upgrade(url)
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture(scope="session")
def redis_url(service_urls: tuple[str, str]) -> str:
    return service_urls[1]


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, worker_id_suffix: str) -> Iterator[Settings]:
    """This test worker's settings; its Redis keys (under its own stream prefix) are deleted at the end."""
    prefix = f"penpay-test-{worker_id_suffix}"
    yield Settings(
        database_url=database_url,
        redis_url=redis_url,
        stream_prefix=prefix,
        _env_file=None,  # type: ignore[call-arg]
    )
    asyncio.run(drop_keys(redis_url, prefix))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=30)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def db(engine: AsyncEngine) -> Database:
    return Database(engine, SystemClock())


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that configure logging (``configure_logging``, the CLI's ``run``): the root logger's level and
    handlers and structlog's configuration as they were, afterwards (structlog would otherwise keep writing to a
    test's captured, closed stream)."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
