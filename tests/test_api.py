"""The REST contract, through HTTP, with the worker running in-process."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx

from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.store.migrate import migrate
from tests.conftest import (
    eventually,
    make_settings,
    metrics,
    serve_in_process,
    submit,
    wait,
    wait_for_status,
)
from tests.harness import Metrics, lines


async def test_execute_answers_202_at_once_and_the_graph_completes(
    client: httpx.AsyncClient,
) -> None:
    """POST /execute returns QUEUED with a Location; the execution then completes."""
    response = await client.post("/execute", json={"graph_id": "steps", "input": {"text": "hi"}})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "QUEUED"
    assert response.headers["location"] == f"/executions/{body['execution_id']}"
    record = await wait(client, body["execution_id"])
    assert record["status"] == "COMPLETED"
    assert record["output"] == {"text": "HI!", "steps": ["upper", "exclaim"]}
    assert record["attempts"] == 1
    assert record["started_at"] and record["finished_at"]


async def test_execute_does_not_wait_for_the_graph(sqlite_client: httpx.AsyncClient) -> None:
    """A slow graph is still QUEUED or RUNNING when POST /execute has answered."""
    response = await sqlite_client.post(
        "/execute", json={"graph_id": "slow", "input": {"steps": 2, "sleep_s": 1}}
    )
    assert response.status_code == 202
    record = (await sqlite_client.get(response.headers["location"])).json()
    assert record["status"] in ("QUEUED", "RUNNING")
    await sqlite_client.post(f"{response.headers['location']}/cancel")


async def test_failing_graph_is_failed_with_type_and_message_and_worker_goes_on(
    client: httpx.AsyncClient,
) -> None:
    """An exception becomes FAILED {type, message}; the traceback is not shown; the next
    execution still runs."""
    failed = await wait(client, await submit(client, "fail", {"message": "bad input"}))
    assert failed["status"] == "FAILED"
    assert failed["error"] == {"type": "ValueError", "message": "bad input"}
    assert "Traceback" not in json.dumps(failed)
    after = await wait(client, await submit(client, "steps", {"text": "ok"}))
    assert after["status"] == "COMPLETED"


async def test_timeout_fails_the_execution_with_type_timeout(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """An execution past its timeout_s is FAILED with error type "timeout"."""
    execution_id = await submit(sqlite_client, "slow", {"steps": 5, "sleep_s": 1}, timeout_s=0.3)
    record = await wait(sqlite_client, execution_id)
    assert record["status"] == "FAILED"
    assert record["error"]["type"] == "timeout"
    assert "0.3" in record["error"]["message"]


async def test_interrupt_then_resume_continues_from_the_checkpoint(
    client: httpx.AsyncClient,
) -> None:
    """interrupt() -> INTERRUPTED with its payload; resume -> the graph gets the value."""
    execution_id = await submit(client, "approval", {"request": "a blog post"})
    paused = await wait(client, execution_id)
    assert paused["status"] == "INTERRUPTED"
    [interrupt] = paused["interrupts"]
    assert interrupt["value"]["question"] == "Approve this draft?"
    assert "a blog post" in interrupt["value"]["draft"]
    assert interrupt["value"]["draft"].startswith("hello")  # langgraph.json "env" applied
    response = await client.post(f"/executions/{execution_id}/resume", json={"resume": "yes"})
    assert response.status_code == 202
    assert response.json()["status"] == "QUEUED"
    done = await wait(client, execution_id)
    assert done["status"] == "COMPLETED"
    assert done["output"]["status"] == "published"
    assert done["output"]["decision"] == "yes"
    assert done["output"]["draft"] == interrupt["value"]["draft"]
    assert done["attempts"] == 2


async def test_resume_refuses_an_execution_that_is_not_interrupted(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """Resuming a COMPLETED execution is 409 invalid_transition and changes nothing."""
    execution_id = await submit(sqlite_client, "steps", {"text": "x"})
    await wait(sqlite_client, execution_id)
    response = await sqlite_client.post(f"/executions/{execution_id}/resume", json={"resume": 1})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_transition"
    assert response.json()["error"]["details"] == {"current": "COMPLETED", "wanted": "QUEUED"}
    assert (await sqlite_client.get(f"/executions/{execution_id}")).json()["status"] == "COMPLETED"


async def test_cancel_a_running_execution_stops_its_graph(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Cancelling a RUNNING execution makes it CANCELLED and stops its graph at once: the
    worker counts the attempt stopped, its slot is free, and no step runs after."""
    marker = tmp_path / "steps.txt"
    execution_id = await submit(
        client, "slow", {"steps": 20, "sleep_s": 0.2, "marker_file": str(marker)}
    )
    await wait_for_status(client, execution_id, "RUNNING")
    await eventually(marker.exists, what="a first step")
    before = (await metrics(client)).value("lg_deploy_attempts_stopped_total", reason="cancelled")
    response = await client.post(f"/executions/{execution_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"

    async def stopped() -> bool:
        seen = await metrics(client)
        return seen.value("lg_deploy_attempts_stopped_total", reason="cancelled") > before

    await eventually(stopped, what="the graph stopping")
    assert (await metrics(client)).value("lg_deploy_worker_slots_busy") == 0
    assert len(marker.read_text().splitlines()) < 20
    record = (await client.get(f"/executions/{execution_id}")).json()
    assert record["status"] == "CANCELLED"
    assert record["output"] is None


async def test_cancel_queued_and_terminal(sqlite_client: httpx.AsyncClient) -> None:
    """A QUEUED execution cancels at once; a terminal one answers 409."""
    # A busy thread keeps the second execution QUEUED behind the first.
    first = await submit(sqlite_client, "slow", {"steps": 3, "sleep_s": 0.3}, thread_id="t")
    second = await submit(sqlite_client, "steps", {"text": "x"}, thread_id="t")
    response = await sqlite_client.post(f"/executions/{second}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert (await wait(sqlite_client, first))["status"] == "COMPLETED"
    again = await sqlite_client.post(f"/executions/{second}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_transition"


async def test_unknown_execution_is_404(sqlite_client: httpx.AsyncClient) -> None:
    """Unknown and malformed ids are 404 not_found on every execution route."""
    for path in (
        "/executions/0192aaaa-0000-7000-8000-000000000000",
        "/executions/not-a-uuid",
        "/executions/not-a-uuid/wait?timeout=0",
    ):
        response = await sqlite_client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    response = await sqlite_client.post("/executions/not-a-uuid/cancel")
    assert response.status_code == 404


async def _nothing_written(client: httpx.AsyncClient) -> None:
    assert (await client.get("/executions")).json()["items"] == []


async def test_unknown_graph_is_422_and_writes_nothing(sqlite_client: httpx.AsyncClient) -> None:
    """An unknown graph_id is 422 unknown_graph listing the known graphs; no row is written."""
    response = await sqlite_client.post("/execute", json={"graph_id": "nope", "input": {}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_graph"
    assert "steps" in error["details"]["known_graphs"]
    await _nothing_written(sqlite_client)


async def test_malformed_json_is_400_and_writes_nothing(sqlite_client: httpx.AsyncClient) -> None:
    """A body that is not JSON is 400 malformed_json."""
    response = await sqlite_client.post(
        "/execute", content=b'{"graph_id": "steps",', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    await _nothing_written(sqlite_client)


async def test_wrong_types_and_unknown_fields_are_422(sqlite_client: httpx.AsyncClient) -> None:
    """Wrong types, a missing graph_id, unknown fields and a bad timeout are 422
    validation_error naming the field; nothing is written."""
    bad_bodies: list[tuple[Any, str]] = [
        ({"graph_id": 5, "input": {}}, "graph_id"),
        ({"input": {}}, "graph_id"),
        ({"graph_id": "steps", "config": "x"}, "config"),
        ({"graph_id": "steps", "metadata": [1]}, "metadata"),
        ({"graph_id": "steps", "timeout_s": -1}, "timeout_s"),
        ({"graph_id": "steps", "thread_id": ""}, "thread_id"),
        ({"graph_id": "steps", "surprise": True}, "surprise"),
        ([1, 2], "body"),
    ]
    for body, field in bad_bodies:
        response = await sqlite_client.post("/execute", json=body)
        assert response.status_code == 422, body
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert any(field in d["loc"] for d in error["details"]), (body, error)
    await _nothing_written(sqlite_client)


async def test_oversized_body_is_413_and_writes_nothing(sqlite_client: httpx.AsyncClient) -> None:
    """A body over the limit (1 MiB by default) is 413 payload_too_large, with or without a
    Content-Length header."""
    big = {"graph_id": "steps", "input": {"text": "x" * (1024 * 1024)}}
    response = await sqlite_client.post("/execute", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 64 * 1024):
            yield payload[i : i + 64 * 1024]

    streamed = await sqlite_client.post(
        "/execute", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    await _nothing_written(sqlite_client)


async def test_idempotency_key_replays_and_conflicts(sqlite_client: httpx.AsyncClient) -> None:
    """The same key and body return the same execution; the same key with another body
    is 409 idempotency_conflict."""
    body = {"graph_id": "steps", "input": {"text": "once"}}
    headers = {"Idempotency-Key": "order-42"}
    first = await sqlite_client.post("/execute", json=body, headers=headers)
    second = await sqlite_client.post("/execute", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["execution_id"] == second.json()["execution_id"]
    assert second.headers["idempotent-replayed"] == "true"
    other = await sqlite_client.post(
        "/execute", json={**body, "input": {"text": "twice"}}, headers=headers
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    listed = (await sqlite_client.get("/executions")).json()["items"]
    assert [e["execution_id"] for e in listed] == [first.json()["execution_id"]]


async def test_list_filters_and_cursor_pagination(client: httpx.AsyncClient) -> None:
    """GET /executions filters by status, graph and thread, and pages with a cursor."""
    ids = [await submit(client, "steps", {"text": str(i)}, thread_id="conv") for i in range(3)]
    failed = await submit(client, "fail", {})
    for execution_id in [*ids, failed]:
        await wait(client, execution_id)
    page1 = (await client.get("/executions", params={"limit": 2})).json()
    page2 = await client.get("/executions", params={"limit": 2, "cursor": page1["next_cursor"]})
    listed = [e["execution_id"] for e in page1["items"] + page2.json()["items"]]
    assert listed == [failed, *reversed(ids)]
    assert page2.json()["next_cursor"] is None
    by_status = (await client.get("/executions", params={"status": "FAILED"})).json()["items"]
    assert [e["execution_id"] for e in by_status] == [failed]
    by_graph = (await client.get("/executions", params={"graph_id": "steps"})).json()["items"]
    assert len(by_graph) == 3
    by_thread = (await client.get("/executions", params={"thread_id": "conv"})).json()["items"]
    assert {e["execution_id"] for e in by_thread} == set(ids)
    for params in ({"status": "DONE"}, {"limit": 0}, {"limit": 5000}, {"cursor": "zzz"}):
        bad = await client.get("/executions", params=params)
        assert bad.status_code == 422, params
        assert bad.json()["error"]["code"] == "validation_error"


async def test_wait_returns_when_the_timeout_passes(sqlite_client: httpx.AsyncClient) -> None:
    """/wait on an execution still running answers with its current status after timeout."""
    execution_id = await submit(sqlite_client, "slow", {"steps": 3, "sleep_s": 1})
    record = await wait(sqlite_client, execution_id, timeout=0.2)
    assert record["status"] in ("QUEUED", "RUNNING")
    bad = await sqlite_client.get(f"/executions/{execution_id}/wait", params={"timeout": -1})
    assert bad.status_code == 422
    await sqlite_client.post(f"/executions/{execution_id}/cancel")


async def test_a_thread_continues_its_conversation(client: httpx.AsyncClient) -> None:
    """Two executions on the same thread_id: the second sees the first's messages."""
    first = await submit(
        client,
        "agent",
        {"messages": [{"role": "user", "content": "what is 2 + 3?"}]},
        thread_id="chat-1",
    )
    second = await submit(
        client,
        "agent",
        {"messages": [{"role": "user", "content": "what is 6 x 7?"}]},
        thread_id="chat-1",
    )
    one, two = await wait(client, first), await wait(client, second)
    assert one["status"] == two["status"] == "COMPLETED"
    assert one["output"]["messages"][-1]["content"].endswith("5.")
    messages = two["output"]["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai"] * 2
    assert messages[-1]["content"].endswith("42.")


async def test_executions_of_one_thread_never_overlap(
    sqlite_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Executions on one thread run one after the other, in submission order."""
    markers = [tmp_path / f"{i}.txt" for i in range(3)]
    ids = [
        await submit(
            sqlite_client,
            "slow",
            {"steps": 2, "sleep_s": 0.1, "marker_file": str(m)},
            thread_id="serial",
        )
        for m in markers
    ]
    records = [await wait(sqlite_client, i) for i in ids]
    assert [r["status"] for r in records] == ["COMPLETED"] * 3
    spans = [(r["started_at"], r["finished_at"]) for r in records]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


async def test_graphs_lists_ids_descriptions_and_schemas(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """GET /graphs describes every graph with its input and output JSON schema."""
    graphs = {g["graph_id"]: g for g in (await sqlite_client.get("/graphs")).json()}
    assert {"steps", "agent", "approval", "slow", "fail"} <= set(graphs)
    assert graphs["steps"]["input_schema"]["properties"]["text"]["type"] == "string"
    assert "steps" in graphs["steps"]["output_schema"]["properties"]
    assert graphs["fail"]["description"] == "Raises the error its input names."
    assert graphs["agent"]["input_schema"] is not None  # built by calling the factory


async def test_health_and_readiness(sqlite_client: httpx.AsyncClient) -> None:
    """/healthz and /readyz answer 200 when the store and queue are up."""
    assert (await sqlite_client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await sqlite_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "queue": "ok"}


async def test_openapi_documents_every_route_and_error(sqlite_client: httpx.AsyncClient) -> None:
    """The OpenAPI document names every endpoint, the request bodies and the error shape."""
    spec = (await sqlite_client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/execute",
        "/executions",
        "/executions/{execution_id}",
        "/executions/{execution_id}/wait",
        "/executions/{execution_id}/cancel",
        "/executions/{execution_id}/resume",
        "/graphs",
        "/healthz",
        "/readyz",
    ):
        assert path in paths, path
    execute = paths["/execute"]["post"]
    assert execute["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ExecuteRequest"
    )
    for code in ("202", "400", "409", "413", "422", "503"):
        assert code in execute["responses"], code
    assert execute["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse"
    )
    assert "ErrorBody" in spec["components"]["schemas"]


async def test_values_a_database_refuses_are_422_not_500(client: httpx.AsyncClient) -> None:
    """NUL characters and non-finite numbers (which PostgreSQL refuses) are 422 on both
    stores, in the body and in list filters; nothing is written."""
    bodies = [
        b'{"graph_id": "steps", "input": {"text": "a\\u0000b"}}',
        b'{"graph_id": "steps", "input": {"n": NaN}}',
        b'{"graph_id": "steps", "input": {"n": Infinity}}',
        b'{"graph_id": "steps", "input": {}, "thread_id": "t\\u0000"}',
        b'{"graph_id": "steps", "input": {}, "metadata": {"k\\u0000": 1}}',
    ]
    for body in bodies:
        response = await client.post(
            "/execute", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "validation_error"
    listed = await client.get("/executions", params={"thread_id": "a\x00b"})
    assert listed.status_code == 422
    await _nothing_written(client)


async def test_config_may_not_choose_the_thread_or_checkpoint(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """config.configurable may not set thread_id, checkpoint keys or LangGraph internals,
    and configurable/metadata must be objects: 422, nothing written."""
    for config in (
        {"configurable": {"checkpoint_id": "x"}},
        {"configurable": {"thread_id": "x"}},
        {"configurable": {"__pregel_durability": "exit"}},
        {"configurable": "x"},
        {"metadata": [1]},
    ):
        response = await sqlite_client.post(
            "/execute", json={"graph_id": "steps", "input": {}, "config": config}
        )
        assert response.status_code == 422, config
    ok = await sqlite_client.post(
        "/execute",
        json={"graph_id": "steps", "input": {"text": "x"}, "config": {"configurable": {"k": 1}}},
    )
    assert ok.status_code == 202
    assert (await wait(sqlite_client, ok.json()["execution_id"]))["status"] == "COMPLETED"


async def test_metrics_show_the_deployment_and_the_in_process_worker(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """/metrics shows unfinished executions by graph and status, the runnable backlog, the
    queue depth, the backends' health, submissions, HTTP requests by route template, and
    what the in-process worker did."""
    before = await metrics(sqlite_client)
    done = await submit(sqlite_client, "steps", {"text": "m"})
    await wait(sqlite_client, done)
    paused = await submit(sqlite_client, "approval", {"request": "r"})
    await wait(sqlite_client, paused)
    response = await sqlite_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    seen = Metrics(response.text)

    def grew(name: str, **labels: str) -> float:
        return seen.value(name, **labels) - before.value(name, **labels)

    assert seen.value("lg_deploy_executions", graph_id="approval", status="INTERRUPTED") == 1
    assert seen.value("lg_deploy_executions", graph_id="steps", status="QUEUED") == 0
    assert seen.value("lg_deploy_executions_runnable", graph_id="steps") == 0
    assert seen.value("lg_deploy_oldest_runnable_age_seconds", graph_id="steps") == 0
    assert seen.value("lg_deploy_queue_depth") == 0
    assert seen.value("lg_deploy_backend_up", backend="database") == 1
    assert grew("lg_deploy_executions_submitted_total", graph_id="steps") == 1
    assert grew("lg_deploy_executions_finished_total", graph_id="steps", status="COMPLETED") == 1
    assert grew("lg_deploy_executions_finished_total", status="INTERRUPTED") == 1
    assert grew("lg_deploy_attempt_duration_seconds_count", graph_id="steps") == 1
    route = "/executions/{execution_id}/wait"
    assert grew("lg_deploy_http_requests_total", method="GET", route=route, status="200") == 2
    assert grew("lg_deploy_http_requests_total", route="/execute", status="202") == 2
    assert not [n for _, labels, _ in seen.samples if (n := labels.get("route", "")) and done in n]
    assert (await sqlite_client.head("/metrics")).status_code == 200


async def test_metrics_count_what_waits_to_run(sqlite_url: str, registry: GraphRegistry) -> None:
    """Without a worker, submitted executions show as runnable, and the oldest one's age
    grows while it waits."""
    await migrate(sqlite_url)
    async with serve_in_process(make_settings(sqlite_url), registry, run_worker=False) as client:
        for _ in range(3):
            await submit(client, "steps", {"text": "x"})
        first = await metrics(client)
        assert first.value("lg_deploy_executions_runnable", graph_id="steps") == 3
        assert first.value("lg_deploy_executions", graph_id="steps", status="QUEUED") == 3

        async def older() -> bool:
            later = await metrics(client)
            age = "lg_deploy_oldest_runnable_age_seconds"
            return later.value(age, graph_id="steps") > first.value(age, graph_id="steps")

        await eventually(older, what="the oldest execution aging")


async def test_cancelling_a_blocking_sync_node_keeps_the_record_and_the_worker(
    sqlite_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A sync node cannot be interrupted (its thread runs on): the cancel still holds, the
    node's late result is dropped, and other executions run meanwhile."""
    marker = tmp_path / "returned"
    blocked = await submit(sqlite_client, "sync_slow", {"sleep_s": 1.5, "marker_file": str(marker)})
    await wait_for_status(sqlite_client, blocked, "RUNNING")
    response = await sqlite_client.post(f"/executions/{blocked}/cancel")
    assert response.json()["status"] == "CANCELLED"
    other = await wait(sqlite_client, await submit(sqlite_client, "steps", {"text": "go"}))
    assert other["status"] == "COMPLETED"
    assert (await sqlite_client.get(f"/executions/{blocked}")).json()["status"] == "CANCELLED"
    assert lines(marker) == ["started"]  # still sleeping when the other one finished
    await eventually(lambda: lines(marker) == ["started", "returned"], what="the node returning")
    record = (await sqlite_client.get(f"/executions/{blocked}")).json()
    assert record["status"] == "CANCELLED"
    assert record["output"] is None


async def test_every_answer_has_a_request_id_that_follows_the_execution(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """A sensible X-Request-ID is kept, anything else replaced by a fresh id; the answer
    carries it, and so does the execution a submission creates."""
    body = {"graph_id": "steps", "input": {"text": "x"}}
    given = await sqlite_client.post("/execute", json=body, headers={"X-Request-ID": "req-42.a"})
    assert given.headers["x-request-id"] == "req-42.a"
    assert given.json()["request_id"] == "req-42.a"
    for header in ({}, {"X-Request-ID": "bad id with spaces"}, {"X-Request-ID": "x" * 300}):
        made = await sqlite_client.post("/execute", json=body, headers=header)
        request_id = made.headers["x-request-id"]
        assert len(request_id) == 32 and int(request_id, 16) >= 0
        assert made.json()["request_id"] == request_id
    assert len((await sqlite_client.get("/healthz")).headers["x-request-id"]) == 32
    done = await wait(sqlite_client, given.json()["execution_id"])
    assert done["request_id"] == "req-42.a"


async def test_the_graph_sees_the_execution_graph_and_attempt_in_its_config(
    sqlite_client: httpx.AsyncClient,
) -> None:
    """Every node (and so a LangSmith tracer) sees the execution, graph and attempt as
    metadata, and tags naming the execution, beside the caller's own."""
    execution_id = await submit(
        sqlite_client, "config_echo", {}, config={"tags": ["mine"], "metadata": {"team": "a"}}
    )
    output = (await wait(sqlite_client, execution_id))["output"]
    assert output["metadata"] == {
        "lg_deploy_execution_id": execution_id,
        "lg_deploy_graph_id": "config_echo",
        "lg_deploy_attempt": 1,
    }
    assert set(output["tags"]) >= {"mine", "lg-deploy", f"execution:{execution_id}"}
