"""The lg-deploy command refuses bad configurations with one clear line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lg_deploy.core.urls import mask_url
from lg_deploy.run import loops
from tests.conftest import PG_ADMIN_URL, TEST_GRAPHS, PgAdmin
from tests.harness import LG_DEPLOY


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LG_DEPLOY), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "LG_DEPLOY_CONFIG": str(TEST_GRAPHS), **env},
    )


def test_mask_url_hides_the_password_only() -> None:
    """Logged URLs keep user, host and database but never the password."""
    assert (
        mask_url("postgresql+asyncpg://app:s3cret@db:5432/lg")
        == "postgresql+asyncpg://app:***@db:5432/lg"
    )
    assert mask_url("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_an_unknown_database_scheme_names_the_schemes_that_work(tmp_path: Path) -> None:
    """A database URL nobody serves fails at once, listing the supported schemes."""
    result = run(["migrate"], tmp_path, LG_DEPLOY_DATABASE_URL="mysql://x@y/z")
    assert result.returncode == 2
    assert "no backend serves 'mysql://x@y/z'" in result.stderr
    assert "sqlite+aiosqlite:///path" in result.stderr


@pytest.mark.parametrize("command", ["api", "worker"])
def test_api_and_worker_refuse_the_in_process_queue(tmp_path: Path, command: str) -> None:
    """lg-deploy api and worker need a shared queue and say so."""
    result = run([command], tmp_path, LG_DEPLOY_QUEUE_URL="memory://")
    assert result.returncode == 2
    assert f"lg-deploy {command} needs a shared queue" in result.stderr
    assert "LG_DEPLOY_QUEUE_URL=redis://" in result.stderr


@pytest.mark.postgres
def test_worker_refuses_to_start_when_redis_stays_down(tmp_path: Path, pg_url: str) -> None:
    """With Redis unreachable past the start-up retry, the worker exits 2 with one clear
    line, after logging where it tried to connect (password masked)."""
    masked_pg = pg_url.replace("postgres@", "postgres:pw@")
    result = run(
        ["worker"],
        tmp_path,
        LG_DEPLOY_DATABASE_URL=masked_pg,
        LG_DEPLOY_QUEUE_URL="redis://:topsecret@127.0.0.1:1/0",
        LG_DEPLOY_STARTUP_TIMEOUT_S="1",
    )
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith("lg-deploy worker: queue is unavailable")
    )
    assert "redis://:***@127.0.0.1:1/0" in result.stderr
    assert "topsecret" not in result.stderr
    assert ":pw@" not in result.stderr


@pytest.mark.postgres
def test_api_refuses_an_unmigrated_database(
    tmp_path: Path, pg_admin: PgAdmin, redis_url: str
) -> None:
    """lg-deploy api on a database that was never migrated says to run migrate."""
    name = "lgd_unmigrated_cli"
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        result = run(
            ["api", "--port", "1"],
            tmp_path,
            LG_DEPLOY_DATABASE_URL=url,
            LG_DEPLOY_QUEUE_URL=redis_url,
        )
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert result.returncode == 2
    assert "run `lg-deploy migrate` first" in result.stderr


@pytest.mark.parametrize("command", ["migrate", "api", "worker"])
def test_a_wrong_driver_never_prints_the_password(tmp_path: Path, command: str) -> None:
    """postgresql:// instead of postgresql+asyncpg:// is refused with the schemes that work,
    and the password appears nowhere in what the command prints."""
    result = run(
        [command],
        tmp_path,
        LG_DEPLOY_DATABASE_URL="postgresql://app:s3cret@127.0.0.1:5432/postgres",
        LG_DEPLOY_QUEUE_URL="redis://127.0.0.1:6379/0",
    )
    assert result.returncode == 2
    assert "s3cret" not in result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "postgresql://app:***@127.0.0.1:5432/postgres" in last
    assert "postgresql+asyncpg://" in last


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("nobody@127.0.0.1:5432/postgres", 'role "nobody"'),
        ("postgres@127.0.0.1:5432/nosuchdb", 'database "nosuchdb"'),
    ],
)
@pytest.mark.parametrize("command", ["migrate", "worker"])
def test_a_missing_role_or_database_is_one_clear_line(
    tmp_path: Path, redis_url: str, command: str, path: str, reason: str
) -> None:
    """A role or database that does not exist stops the command at once (no retry until
    the start-up timeout) with one line naming it, not a traceback."""
    result = run(
        [command],
        tmp_path,
        LG_DEPLOY_DATABASE_URL=f"postgresql+asyncpg://{path}",
        LG_DEPLOY_QUEUE_URL=redis_url,
        LG_DEPLOY_STARTUP_TIMEOUT_S="60",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"lg-deploy {command}: database refused the connection")
    assert reason in last


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


@pytest.mark.parametrize(
    ("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_the_event_loop_setting_chooses_the_loop(choice: loops.EventLoop, expected: str) -> None:
    """LG_DEPLOY_EVENT_LOOP: auto takes uvloop where it is installed (it is, here)."""
    assert loops.chosen(choice) == expected
    assert loops.run(_loop_module(), choice) == expected


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    assert loops.chosen("auto") == "asyncio"
    assert loops.run(_loop_module(), "auto") == "asyncio"
    with pytest.raises(loops.EventLoopUnavailable):
        loops.chosen("uvloop")


def test_uvloop_asked_for_where_it_is_missing_is_one_clear_line(tmp_path: Path) -> None:
    """A worker told to run on uvloop where it cannot be imported exits 2 at once."""
    shim = tmp_path / "shim" / "uvloop"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('uvloop is not installed')\n")
    result = run(
        ["worker"],
        tmp_path,
        PYTHONPATH=str(shim.parent),
        LG_DEPLOY_EVENT_LOOP="uvloop",
        LG_DEPLOY_QUEUE_URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "lg-deploy worker: LG_DEPLOY_EVENT_LOOP=uvloop, but uvloop is not installed here "
        "(pip install uvloop, or use auto or asyncio)"
    )
