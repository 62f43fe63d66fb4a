"""Fixtures: real SQLite files and a real PostgreSQL (a fresh database per test), the
example graphs, and the API served in-process with its worker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lg_deploy.api.app import create_app
from lg_deploy.api.deps import BackendsFactory
from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.graphs import GraphRegistry, load_registry
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Execution
from lg_deploy.core.queue.memory import MemoryQueue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store, open_store
from lg_deploy.core.store.migrate import migrate
from lg_deploy.run.wiring import open_backends
from lg_deploy.run.worker_process import backends_with_worker
from lg_deploy.worker.leases import LeaseKeeper
from lg_deploy.worker.runner import Runner
from tests.harness import Fleet, Metrics, RedisServer

ROOT = Path(__file__).resolve().parent.parent
TEST_GRAPHS = Path(__file__).resolve().parent / "graphs" / "langgraph.json"
EXAMPLES = ROOT / "examples" / "langgraph.json"

PG_ADMIN_URL = os.environ.get(
    "LG_DEPLOY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("LG_DEPLOY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def libpq_url(url: str) -> str:
    """``url`` as libpq (psycopg) takes it: without the asyncpg driver."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


class PgAdmin:
    """Administrative statements on the test server, on a connection of their own per
    statement (a chaos test may restart the server in between)."""

    def __init__(self, url: str) -> None:
        self.conninfo = libpq_url(url)

    def execute(self, sql: str, params: Any = None) -> list[Any]:
        import psycopg

        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="session")
def pg_admin() -> PgAdmin:
    """The test PostgreSQL server, or one clear failure."""
    import psycopg

    admin = PgAdmin(PG_ADMIN_URL)
    try:
        admin.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({str(exc).strip().splitlines()[0]}): "
            "install and start PostgreSQL (Debian: apt-get install postgresql; "
            "pg_ctlcluster <version> main start) or set LG_DEPLOY_TEST_POSTGRES_URL",
            pytrace=False,
        )
    return admin


@pytest.fixture(scope="session")
def pg_template(pg_admin: PgAdmin) -> Iterator[str]:
    """A migrated database that each test's database is copied from."""
    name = f"lgd_tpl_{os.getpid()}"
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    asyncio.run(migrate(_with_database(PG_ADMIN_URL, name)))
    yield name
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(pg_admin: PgAdmin, template: str) -> Iterator[str]:
    """A new database copied from the migrated template; dropped on the way out."""
    name = f"lgd_t_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _with_database(PG_ADMIN_URL, name)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_admin: PgAdmin, pg_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    with fresh_database(pg_admin, pg_template) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis server's URL, or one clear failure."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}): install and start Redis "
            "(Debian: apt-get install redis-server; redis-server --daemonize yes) "
            "or set LG_DEPLOY_TEST_REDIS_URL",
            pytrace=False,
        )
    finally:
        client.close()
    return REDIS_URL


def unique_queue_name() -> str:
    """Each test gets its own ARQ queue on the shared Redis, so tests never see each
    other's jobs."""
    return f"lgd-test-{uuid.uuid4().hex[:10]}"


def drop_queue(url: str, name: str) -> None:
    """Delete a test queue, the job records still waiting in it, and its marks."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        members: list[bytes] = client.zrange(name, 0, -1)  # type: ignore[assignment]
        keys = [name, *(f"arq:job:{j.decode()}" for j in members)]
        keys += [k.decode() for k in client.scan_iter(match=f"{name}:*")]
        client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of the test's own (``redis-server`` from PATH), for tests that stop
    and restart it; the shared one stays up."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/lg-deploy.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        asyncio.run(migrate(url))
        return url
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = open_store(database_url)
    yield s
    await s.close()


@pytest.fixture(scope="session")
def registry() -> GraphRegistry:
    return load_registry(TEST_GRAPHS)


@pytest.fixture
async def checkpointer(database_url: str) -> AsyncIterator[Any]:
    async with open_checkpointer(database_url) as saver:
        yield saver


@pytest.fixture
async def keeper(database_url: str) -> AsyncIterator[LeaseKeeper]:
    """A real lease keeper, in its thread with a connection of its own."""
    leases = LeaseKeeper(
        lambda: open_store(database_url, pool_size=1), lease_s=5.0, on_lost=lambda _: None
    )
    leases.start()
    yield leases
    leases.stop()


def lease_store(database_url: str) -> Callable[[], Store]:
    return lambda: open_store(database_url, pool_size=1)


def runner_for(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper, **kw: Any
) -> Runner:
    """A runner whose leases ``keeper`` renews (every third of ``lease_s``)."""
    options: dict[str, Any] = {"owner": "test-worker", "lease_s": 5.0}
    options.update(kw)
    runner = Runner(store, MemoryQueue(), registry, checkpointer, keeper, **options)
    keeper.lease_s = runner.lease_s
    keeper.on_lost = runner.lease_lost
    return runner


async def add(
    store: Store, graph_id: str, input: Any, thread_id: str | None = None, **fields: Any
) -> Execution:
    """A new QUEUED execution written straight to the store."""
    execution_id = new_execution_id()
    execution = Execution(
        execution_id=execution_id,
        graph_id=graph_id,
        thread_id=thread_id or str(execution_id),
        input=input,
        **fields,
    )
    await store.create(execution)
    return execution


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "queue_url": "memory://",
        "worker_concurrency": 4,
        "lease_s": 3.0,
        "reconcile_interval_s": 1.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def serve_in_process(
    settings: Settings,
    registry: GraphRegistry,
    *,
    run_worker: bool = True,
    backends: BackendsFactory | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and a client that talks to it over ASGI: with a
    worker in-process (as ``lg-deploy dev``), without one (as ``lg-deploy api``), or over
    the ``backends`` a test gives."""
    if backends is None:
        if run_worker:
            backends = backends_with_worker(settings, registry)
        else:
            backends = lambda: open_backends(settings)  # noqa: E731
    app = create_app(settings, registry, backends)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lg-deploy") as client:
            yield client


@pytest.fixture
async def client(database_url: str, registry: GraphRegistry) -> AsyncIterator[httpx.AsyncClient]:
    """The API with an in-process worker, once on SQLite and once on PostgreSQL."""
    async with serve_in_process(make_settings(database_url), registry) as c:
        yield c


@pytest.fixture
async def sqlite_client(
    sqlite_url: str, registry: GraphRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with an in-process worker on SQLite only, for tests of the HTTP layer."""
    await migrate(sqlite_url)
    async with serve_in_process(make_settings(sqlite_url), registry) as c:
        yield c


async def eventually(
    condition: Callable[[], Any], timeout: float = 20, what: str = "the condition"
) -> Any:
    """Await ``condition()`` (sync or async) until it is truthy, and return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            pytest.fail(f"{what} not reached in {timeout} s")
        await asyncio.sleep(0.02)


async def submit(client: httpx.AsyncClient, graph_id: str, input: Any = None, **body: Any) -> str:
    response = await client.post("/execute", json={"graph_id": graph_id, "input": input, **body})
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def wait(client: httpx.AsyncClient, execution_id: str, timeout: float = 20) -> dict[str, Any]:
    response = await client.get(f"/executions/{execution_id}/wait", params={"timeout": timeout})
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def wait_for_status(
    client: httpx.AsyncClient, execution_id: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    """Poll until the execution has ``status``; fail with the last record otherwise."""

    async def reached() -> dict[str, Any] | None:
        record: dict[str, Any] = (await client.get(f"/executions/{execution_id}")).json()
        return record if record["status"] == status else None

    found: dict[str, Any] = await eventually(reached, timeout, f"{execution_id} {status}")
    return found


async def metrics(client: httpx.AsyncClient) -> Metrics:
    """The in-process API's /metrics (in lg-deploy dev: the worker's too), parsed."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return Metrics(response.text)


@pytest.fixture
def fleet_env(pg_admin: PgAdmin, pg_template: str, redis_url: str) -> Iterator[dict[str, str]]:
    """A fresh database and a queue of its own on the shared Redis."""
    name = unique_queue_name()
    with fresh_database(pg_admin, pg_template) as url:
        yield {
            "LG_DEPLOY_DATABASE_URL": url,
            "LG_DEPLOY_QUEUE_URL": redis_url,
            "LG_DEPLOY_QUEUE_NAME": name,
            "LG_DEPLOY_CONFIG": str(TEST_GRAPHS),
        }
    drop_queue(redis_url, name)


@pytest.fixture
def fleet(tmp_path: Path, fleet_env: dict[str, str]) -> Iterator[Fleet]:
    f = Fleet(tmp_path, **fleet_env)
    try:
        yield f
    finally:
        f.stop_all()
