"""Bad input gets a clear 4xx and writes nothing; a record that cannot be shown never takes
an answer down; an overloaded API says so without calling the database down."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.queue.memory import MemoryQueue
from lg_deploy.core.store.sql import SQLStore
from lg_deploy.core.store.statements import T
from tests.conftest import make_settings, metrics, serve_in_process, submit, wait
from tests.test_retries_and_outages import given


async def nothing_written(client: httpx.AsyncClient) -> None:
    assert (await client.get("/executions")).json()["items"] == []


def nested(depth: int, opener: str, closer: str, leaf: str = "1") -> bytes:
    return (opener * depth + leaf + closer * depth).encode()


async def post_raw(client: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    return await client.post(
        "/execute", content=body, headers={"content-type": "application/json", **headers}
    )


async def test_inputs_a_store_or_langgraph_cannot_give_back_are_422(
    client: httpx.AsyncClient,
) -> None:
    """Deep nesting (arrays or objects), a lone surrogate and integers beyond 64 bits are
    422 validation_error on both stores, naming where; nothing is written."""
    deep_arrays = nested(900, "[", "]")
    deep_objects = nested(300, '{"a":', "}")
    bodies = [
        b'{"graph_id": "steps", "input": ' + deep_arrays + b"}",
        b'{"graph_id": "steps", "input": ' + deep_objects + b"}",
        b'{"graph_id": "steps", "input": ' + nested(101, "[", "]") + b"}",
        b'{"graph_id": "steps", "input": {"text": "\\ud800"}}',
        b'{"graph_id": "steps", "input": {"\\udfff": 1}}',
        b'{"graph_id": "steps", "input": {}, "thread_id": "t\\ud800"}',
        b'{"graph_id": "steps", "input": {"n": 18446744073709551616}}',
        b'{"graph_id": "steps", "input": {"n": -9223372036854775809}}',
    ]
    for body in bodies:
        response = await post_raw(client, body)
        assert response.status_code == 422, (body[:80], response.text[:300])
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"][0]["loc"][:2] in (["body", "input"], ["body", "thread_id"])
    ok = await post_raw(
        client, b'{"graph_id": "steps", "input": {"text": "x", "n": 9223372036854775807}}'
    )
    assert ok.status_code == 202
    assert (await wait(client, ok.json()["execution_id"]))["status"] == "COMPLETED"


async def test_a_body_too_deep_to_parse_is_malformed_json(sqlite_client: httpx.AsyncClient) -> None:
    """Nesting beyond what a JSON parser takes, or bytes that are not UTF-8, are 400
    malformed_json (never 500), and nothing is written."""
    for body in (nested(100_000, "[", "]"), b'{"graph_id": "steps", "input": "\xff\xfe"}'):
        response = await post_raw(sqlite_client, body)
        assert response.status_code == 400, response.text[:300]
        assert response.json()["error"]["code"] == "malformed_json"
    await nothing_written(sqlite_client)


async def test_numbers_are_not_coerced_and_config_keys_are_checked(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """timeout_s and max_attempts take numbers only (not "5" or true), and config's
    LangGraph keys must have their types: a bad one is 422 naming it, nothing written."""
    bad: list[tuple[dict[str, Any], str]] = [
        ({"timeout_s": "5"}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"max_attempts": "2"}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"config": {"recursion_limit": "abc"}}, "recursion_limit"),
        ({"config": {"recursion_limit": 0}}, "recursion_limit"),
        ({"config": {"max_concurrency": -1}}, "max_concurrency"),
        ({"config": {"tags": "one"}}, "tags"),
        ({"config": {"callbacks": [1]}}, "config"),
        ({"config": {"run_id": str(uuid.uuid4())}}, "config"),
        ({"config": {"surprise": 1}}, "surprise"),
        ({"durability": "sometimes"}, "durability"),
    ]
    for extra, field in bad:
        response = await sqlite_client.post(
            "/execute", json={"graph_id": "steps", "input": {"text": "x"}, **extra}
        )
        assert response.status_code == 422, extra
        details = response.json()["error"]["details"]
        assert any(field in d["loc"] for d in details), (extra, details)
    await nothing_written(sqlite_client)
    good = {
        "config": {"recursion_limit": 50, "max_concurrency": 2, "tags": ["a"], "run_name": "r"},
        "timeout_s": 5,
        "max_attempts": 2,
        "durability": "async",
    }
    ok = await sqlite_client.post(
        "/execute", json={"graph_id": "steps", "input": {"text": "x"}, **good}
    )
    assert ok.status_code == 202, ok.text
    record = await wait(sqlite_client, ok.json()["execution_id"])
    assert record["status"] == "COMPLETED"
    assert record["config"] == good["config"]
    assert record["durability"] == "async"


@pytest.mark.parametrize("key", ["", "   ", "\t"])
async def test_a_blank_idempotency_key_is_refused(
    sqlite_client: httpx.AsyncClient, key: str
) -> None:
    """An empty or all-space Idempotency-Key is 422, not a key that makes the next request
    a replay of this one."""
    response = await sqlite_client.post(
        "/execute",
        json={"graph_id": "steps", "input": {"text": "a"}},
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    await nothing_written(sqlite_client)


async def test_lists_leave_inputs_and_results_out_unless_asked(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """List items carry no input, output or interrupts by default; ?include= adds them,
    and a single execution always has them."""
    done = await wait(sqlite_client, await submit(sqlite_client, "steps", {"text": "big"}))
    paused = await wait(sqlite_client, await submit(sqlite_client, "approval", {"request": "r"}))
    plain = (await sqlite_client.get("/executions")).json()["items"]
    assert [(i["input"], i["output"], i["interrupts"]) for i in plain] == [(None, None, None)] * 2
    full = (await sqlite_client.get("/executions", params={"include": ["input", "output"]})).json()
    by_id = {i["execution_id"]: i for i in full["items"]}
    assert by_id[done["execution_id"]]["output"] == done["output"]
    assert by_id[done["execution_id"]]["input"] == {"text": "big"}
    assert by_id[paused["execution_id"]]["interrupts"] == paused["interrupts"]
    inputs_only = (await sqlite_client.get("/executions", params={"include": "input"})).json()
    assert all(i["output"] is None and i["input"] for i in inputs_only["items"])
    bad = await sqlite_client.get("/executions", params={"include": "secrets"})
    assert bad.status_code == 422


async def poison(store: SQLStore, **values: Any) -> str:
    """A row as an older release or a hand edit may have left it, written around the API."""
    execution_id = new_execution_id()
    row = {
        "execution_id": execution_id,
        "graph_id": "steps",
        "thread_id": str(execution_id),
        "config": {},
        "metadata": {},
        "status": "COMPLETED",
        "has_resume": False,
        "attempt": 1,
        "handbacks": 0,
        "max_attempts": 1,
        "attempt_errors": [],
    } | values
    async with store.engine.begin() as conn:
        now = sa.func.current_timestamp()
        await conn.execute(T.insert().values(**row, created_at=now, updated_at=now, queued_at=now))
    return str(execution_id)


async def test_a_record_that_cannot_be_shown_never_takes_an_answer_down(
    sqlite_url: str, registry: GraphRegistry
) -> None:
    """A stored lone surrogate (written before validation existed) makes its record show
    as unreadable, alone: reads and list pages answer 200, and the record can be deleted."""
    from lg_deploy.core.store import open_store
    from lg_deploy.core.store.migrate import migrate

    await migrate(sqlite_url)
    store = open_store(sqlite_url)
    assert isinstance(store, SQLStore)
    async with serve_in_process(make_settings(sqlite_url), registry) as client:
        fine = await submit(client, "steps", {"text": "fine"})
        await wait(client, fine)
        bad = await poison(store, output={"text": "\ud800"})
        got = await client.get(f"/executions/{bad}")
        assert got.status_code == 200
        assert got.json()["status"] == "COMPLETED"
        assert "surrogates not allowed" in got.json()["unreadable"]
        page = await client.get("/executions", params={"include": "output"})
        assert page.status_code == 200
        items = {i["execution_id"]: i for i in page.json()["items"]}
        assert items[fine]["output"]["text"] == "FINE!"
        assert items[bad]["unreadable"]
        assert (await client.delete(f"/executions/{bad}")).status_code == 204
        assert (await client.get(f"/executions/{bad}")).status_code == 404
        assert [i["execution_id"] for i in (await client.get("/executions")).json()["items"]] == [
            fine
        ]
    await store.close()


async def test_only_finished_executions_are_deleted(sqlite_client: httpx.AsyncClient) -> None:
    """DELETE removes a finished execution (204, then 404); a queued or running one is 409
    execution_active and stays."""
    done = await submit(sqlite_client, "steps", {"text": "x"})
    await wait(sqlite_client, done)
    running = await submit(sqlite_client, "slow", {"steps": 50, "sleep_s": 0.1})
    refused = await sqlite_client.delete(f"/executions/{running}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "execution_active"
    assert (await sqlite_client.get(f"/executions/{running}")).status_code == 200
    assert (await sqlite_client.delete(f"/executions/{done}")).status_code == 204
    assert (await sqlite_client.delete(f"/executions/{done}")).status_code == 404
    await sqlite_client.post(f"/executions/{running}/cancel")


@pytest.mark.postgres
async def test_an_exhausted_connection_pool_is_busy_not_down(
    pg_url: str, registry: GraphRegistry
) -> None:
    """When every pooled connection is taken, requests answer 503 backend_busy with a short
    Retry-After, and /metrics still reports the database up."""
    store = SQLStore.from_url(pg_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    async with serve_in_process(
        make_settings(pg_url), registry, backends=given(store, MemoryQueue())
    ) as client:
        async with store.engine.connect():  # the only connection, held
            response = await client.get("/executions")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "backend_busy"
            assert response.headers["retry-after"] == "1"
            seen = await metrics(client)
            assert seen.value("lg_deploy_backend_up", backend="database") == 1
        assert (await client.get("/executions")).status_code == 200


async def test_probes_answer_head(sqlite_client: httpx.AsyncClient) -> None:
    """Load balancers probe with HEAD: /healthz, /readyz and /metrics answer 200."""
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await sqlite_client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""


def test_error_messages_are_valid_json_for_any_input() -> None:
    """A validation message quoting a lone surrogate is itself valid UTF-8 JSON."""
    from lg_deploy.core.jsonable import find_unstorable

    problem = find_unstorable({"k\ud800": 1})
    assert problem is not None
    json.dumps(problem).encode()
    problem.encode("utf-8")
