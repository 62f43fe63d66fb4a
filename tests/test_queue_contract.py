"""The queue contract, run against memory:// and ARQ on a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.queue import Queue, Topic, open_queue
from lg_deploy.core.queue.redis import RedisQueue
from tests.conftest import drop_queue, eventually, unique_queue_name


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[Queue]:
    if request.param == "memory":
        q = open_queue("memory://")
    else:
        url: str = request.getfixturevalue("redis_url")
        name = unique_queue_name()
        q = open_queue(url, name=name, poll_delay_s=0.02)
        request.addfinalizer(lambda: drop_queue(url, name))
    yield q
    await q.close()


class Recorder:
    """A handler that records deliveries and how many ran at once."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.seen: list[uuid.UUID] = []
        self.times: dict[uuid.UUID, float] = {}
        self.running = 0
        self.most_at_once = 0
        self.hold_s = hold_s

    async def __call__(self, execution_id: uuid.UUID) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.seen.append(execution_id)
        self.times[execution_id] = asyncio.get_running_loop().time()
        await asyncio.sleep(self.hold_s)
        self.running -= 1


@contextlib.asynccontextmanager
async def serving(queue: Queue, handler: Any, concurrency: int) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(queue.serve(handler, concurrency=concurrency, stop=stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_every_id_is_delivered_once_within_the_concurrency(queue: Queue) -> None:
    """Twenty ids reach the handler exactly once each, never more than 3 at a time."""
    ids = [uuid.uuid4() for _ in range(20)]
    recorder = Recorder(hold_s=0.05)
    async with serving(queue, recorder, concurrency=3):
        for execution_id in ids:
            await queue.enqueue(execution_id)
        await eventually(lambda: len(recorder.seen) == 20 and recorder.running == 0)
    assert sorted(recorder.seen) == sorted(ids)
    assert recorder.most_at_once <= 3


async def test_enqueueing_a_waiting_id_again_is_a_no_op(queue: Queue) -> None:
    """The same id and attempt enqueued twice waits once and is delivered once."""
    execution_id = uuid.uuid4()
    await queue.enqueue(execution_id, attempt=1)
    await queue.enqueue(execution_id, attempt=1)
    assert await queue.depth() == 1
    recorder = Recorder()
    async with serving(queue, recorder, concurrency=2):
        await eventually(lambda: recorder.seen == [execution_id])
        await asyncio.sleep(0.3)
    assert recorder.seen == [execution_id]


async def test_a_delayed_id_is_not_delivered_early(queue: Queue) -> None:
    """delay_s holds an id back for at least that long."""
    recorder = Recorder()
    late, now = uuid.uuid4(), uuid.uuid4()
    async with serving(queue, recorder, concurrency=2):
        start = asyncio.get_running_loop().time()
        await queue.enqueue(late, delay_s=0.5)
        await queue.enqueue(now)
        await eventually(lambda: late in recorder.times)
    assert recorder.times[late] - start >= 0.5
    assert recorder.seen[0] == now


@pytest.mark.parametrize("topic", ["cancelled", "settled"])
async def test_notices_reach_every_subscriber_from_the_moment_it_subscribed(
    queue: Queue, topic: Topic
) -> None:
    """An id published right after subscribing (no wait in between) reaches every
    subscriber of its topic, and no subscriber of the other topic."""
    other: Topic = "settled" if topic == "cancelled" else "cancelled"
    execution_id = uuid.uuid4()
    async with (
        queue.subscribe(topic) as first,
        queue.subscribe(topic) as second,
        queue.subscribe(other) as elsewhere,
    ):
        await queue.publish(topic, execution_id)
        await queue.publish(other, uuid.UUID(int=0))
        got = [await asyncio.wait_for(anext(n), timeout=5) for n in (first, second)]
        assert await asyncio.wait_for(anext(elsewhere), timeout=5) == uuid.UUID(int=0)
    assert got == [execution_id, execution_id]


async def test_held_says_which_jobs_are_left(queue: Queue) -> None:
    """held names, of the executions asked about at once, those whose job waits in line;
    one with no job (lost, or already run) is left out and nothing is enqueued, leaving
    the decision to the caller."""
    waiting, gone, also_waiting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await queue.enqueue(waiting)
    await queue.enqueue(also_waiting)
    asked = [(waiting, 0), (gone, 0), (also_waiting, 0)]
    assert await queue.held(asked) == {waiting, also_waiting}
    assert await queue.held([]) == set()
    assert await queue.depth() == 2


async def test_serve_returns_after_stop_once_handlers_finish(queue: Queue) -> None:
    """After stop, serve takes nothing new and returns when the handler in flight ends."""
    recorder = Recorder(hold_s=0.3)
    first, second = uuid.uuid4(), uuid.uuid4()
    stop = asyncio.Event()
    task = asyncio.create_task(queue.serve(recorder, concurrency=1, stop=stop))
    await queue.enqueue(first)
    await eventually(lambda: recorder.running == 1)
    await queue.enqueue(second)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert recorder.seen == [first]
    assert recorder.running == 0


async def test_redis_attempt_n_replaces_the_job_of_attempt_n_minus_1(redis_url: str) -> None:
    """Enqueueing attempt 2 takes attempt 1's job (a dead worker's) off the queue."""
    queue = RedisQueue(redis_url, queue_name=unique_queue_name())
    try:
        execution_id = uuid.uuid4()
        await queue.enqueue(execution_id, attempt=1)
        await queue.enqueue(execution_id, attempt=2)
        assert await queue.depth() == 1
    finally:
        await queue.close()


async def test_redis_held_tells_a_taken_job_from_a_lost_one(redis_url: str) -> None:
    """A job taken by a worker counts as held for a while (its worker is claiming it: no
    second delivery); once its mark has lapsed (the worker died before claiming) held
    leaves it out, and enqueueing it again delivers it again."""
    import redis.asyncio as aioredis

    name = unique_queue_name()
    queue = RedisQueue(redis_url, queue_name=name, poll_delay_s=0.02)
    client = aioredis.Redis.from_url(redis_url)
    execution_id = uuid.uuid4()
    try:
        await queue.enqueue(execution_id, attempt=1)
        dead = Recorder()  # takes the job and claims nothing, as a worker that died
        async with serving(queue, dead, concurrency=1):
            await eventually(lambda: dead.seen == [execution_id])
            held = await queue.held([(execution_id, 1)])
            assert held == {execution_id}  # taken a moment ago
            assert await client.zcard(name) == 0  # out of the line
            marks = [k async for k in client.scan_iter(match=f"{name}:taken:*")]
            assert len(marks) == 1
            await client.delete(*marks)  # the mark lapses, as it does 5 s on
            assert await queue.held([(execution_id, 1)]) == set()
        recorder = Recorder()
        await queue.enqueue(execution_id, attempt=1)
        async with serving(queue, recorder, concurrency=1):
            await eventually(lambda: recorder.seen == [execution_id])
    finally:
        await client.aclose()
        await queue.close()
        drop_queue(redis_url, name)


def delivered(recorder: Recorder, count: int) -> Callable[[], bool]:
    return lambda: len(recorder.seen) == count


async def test_redis_wakes_an_idle_worker_at_once(redis_url: str) -> None:
    """An idle worker that looks at the queue only every 30 s still gets a new job at once:
    the enqueue wakes it."""
    name = unique_queue_name()
    queue = RedisQueue(redis_url, queue_name=name, poll_delay_s=30)
    try:
        recorder = Recorder()
        async with serving(queue, recorder, concurrency=2):
            for count in range(1, 4):
                await queue.enqueue(uuid.uuid4())
                await eventually(delivered(recorder, count), timeout=5)
    finally:
        await queue.close()
        drop_queue(redis_url, name)


async def test_redis_wakes_idle_workers_only_when_no_due_job_waits(redis_url: str) -> None:
    """An enqueue wakes the idle workers when nothing due waited before it (into an empty
    queue, or behind a delayed job only); behind a due job it sends nothing, since every
    worker with a free slot is already on its way to take that one."""
    import redis.asyncio as aioredis

    name = unique_queue_name()
    queue = RedisQueue(redis_url, queue_name=name)
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(queue.wake_channel)
    await pubsub.get_message(timeout=1.0)  # the subscription's confirmation

    async def woken() -> int:
        count = 0
        while await pubsub.get_message(timeout=0.2) is not None:
            count += 1
        return count

    try:
        await queue.enqueue(uuid.uuid4(), delay_s=60)  # empty queue
        assert await woken() == 1
        await queue.enqueue(uuid.uuid4())  # only a delayed job waits
        assert await woken() == 1
        await queue.enqueue(uuid.uuid4())  # a due job waits
        await queue.enqueue(uuid.uuid4())
        assert await woken() == 0
        taken, _ = await queue._take(10)
        assert len(taken) == 3  # the due ones
        await queue.enqueue(uuid.uuid4())  # nothing due waits any more
        assert await woken() == 1
    finally:
        await pubsub.aclose()
        await client.aclose()
        await queue.close()
        drop_queue(redis_url, name)


async def test_redis_jobs_enqueued_together_reach_every_idle_worker_at_once(
    redis_url: str,
) -> None:
    """Three workers of one slot each, looking at the queue unwoken only every 30 s: three
    jobs enqueued back to back (the second and third wake nobody) all start at once,
    each on its own worker."""
    name = unique_queue_name()
    queues = [RedisQueue(redis_url, queue_name=name, poll_delay_s=30) for _ in range(3)]
    release = asyncio.Event()
    started: list[tuple[int, uuid.UUID]] = []

    def holder(index: int) -> Callable[[uuid.UUID], Any]:
        async def hold(execution_id: uuid.UUID) -> None:
            started.append((index, execution_id))
            await release.wait()

        return hold

    try:
        async with contextlib.AsyncExitStack() as stack:
            for index, q in enumerate(queues):
                await stack.enter_async_context(serving(q, holder(index), concurrency=1))
            stack.callback(release.set)
            await asyncio.sleep(0.2)  # all three idle, waiting for a wake-up
            ids = [uuid.uuid4() for _ in range(3)]
            for execution_id in ids:
                await queues[0].enqueue(execution_id)
            await eventually(lambda: len(started) == 3, timeout=5)
            assert sorted(index for index, _ in started) == [0, 1, 2]
            assert sorted(eid for _, eid in started) == sorted(ids)
    finally:
        for q in queues:
            await q.close()
        drop_queue(redis_url, name)


async def test_redis_a_served_executions_settled_notice_rides_on_the_next_take(
    redis_url: str,
) -> None:
    """While a worker serves, the "settled" notice of an execution that ends there goes
    out with the take that its freed slot starts, or on its own while every slot is
    still busy; once serving stopped, at once. Each reaches subscribers as a notice of
    its own."""
    name = unique_queue_name()
    queue = RedisQueue(redis_url, queue_name=name, poll_delay_s=30)
    release = asyncio.Event()

    async def settle(execution_id: uuid.UUID) -> None:
        await queue.publish("settled", execution_id)
        if execution_id == ids[0]:
            await release.wait()  # the only slot stays busy after the notice

    ids = [uuid.uuid4() for _ in range(3)]
    try:
        async with queue.subscribe("settled") as notices:
            async with serving(queue, settle, concurrency=1):
                for execution_id in ids:
                    await queue.enqueue(execution_id)
                assert await asyncio.wait_for(anext(notices), timeout=5) == ids[0]
                release.set()
                got = [await asyncio.wait_for(anext(notices), timeout=5) for _ in ids[1:]]
                assert sorted(got) == sorted(ids[1:])
            late = uuid.uuid4()
            await queue.publish("settled", late)  # no longer serving: sent at once
            assert await asyncio.wait_for(anext(notices), timeout=5) == late
    finally:
        await queue.close()
        drop_queue(redis_url, name)


class Exploit:
    """A pickle that runs code when loaded: what anyone who can write to Redis could plant."""

    def __init__(self, proof: str) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import pathlib

        return (pathlib.Path.touch, (self.proof,))


async def test_redis_jobs_are_json_and_a_pickle_is_never_loaded(
    redis_url: str, tmp_path: Any
) -> None:
    """A job on Redis is ARQ's record as JSON, holding the execution id alone; a pickled
    job planted in the queue is dropped without being read (no code runs) and reaches no
    handler."""
    import pickle

    import redis.asyncio as aioredis

    name = unique_queue_name()
    queue = RedisQueue(redis_url, queue_name=name, poll_delay_s=0.02)
    client = aioredis.Redis.from_url(redis_url)
    proof = tmp_path / "unpickled"
    try:
        execution_id = uuid.uuid4()
        await queue.enqueue(execution_id)
        raw = await client.get(f"arq:job:{execution_id}:0")
        assert json.loads(raw)["a"] == [str(execution_id)]
        await client.delete(f"arq:job:{execution_id}:0")
        await client.zrem(name, f"{execution_id}:0")
        await client.set("arq:job:planted", pickle.dumps(Exploit(str(proof))))
        await client.zadd(name, {"planted": 0})
        recorder = Recorder()
        async with serving(queue, recorder, concurrency=1):
            await eventually(lambda: _gone(client, name, "planted"), what="the planted job dropped")
        assert not proof.exists()
        assert recorder.seen == []
    finally:
        await client.delete("arq:job:planted")
        await client.aclose()
        await queue.close()
        drop_queue(redis_url, name)


async def _gone(client: Any, queue_name: str, job: str) -> bool:
    return await client.zscore(queue_name, job) is None


async def test_redis_down_is_backend_unavailable() -> None:
    """Every queue operation against a Redis that is not there raises BackendUnavailable."""
    queue = RedisQueue("redis://127.0.0.1:1/0", connect_timeout_s=1)
    try:
        with pytest.raises(BackendUnavailable):
            await queue.ping()
        with pytest.raises(BackendUnavailable):
            await queue.enqueue(uuid.uuid4())
        with pytest.raises(BackendUnavailable):
            await queue.depth()
    finally:
        await queue.close()
