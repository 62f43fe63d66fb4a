"""The stream event log's contract (core/events/), once per backend: memory:// and a real
Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from lg_deploy.core.events import (
    START,
    EventLog,
    InvalidEventId,
    NewEvent,
    open_event_log,
    parse_event_id,
)
from lg_deploy.core.events.redis import RedisEventLog


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[EventLog]:
    """A log with room for 50 events per run, on each backend (Redis: a prefix of its own)."""
    if request.param == "memory":
        events = open_event_log("memory://", maxlen=50, ttl_s=60)
    else:
        url: str = request.getfixturevalue("redis_url")
        events = open_event_log(url, prefix=f"lgd-test-{uuid.uuid4().hex[:8]}", maxlen=50, ttl_s=60)
    yield events
    await events.close()


def new(i: int, mode: str = "values") -> NewEvent:
    return NewEvent("values", f'{{"i":{i}}}', mode)


async def test_events_come_back_in_order_with_increasing_ids(log: EventLog) -> None:
    """Appended events are read back in order, each with a larger id than the one before,
    and reading after an id gets exactly what followed it."""
    run = uuid.uuid4()
    ids = await log.append(run, [new(0), new(1)])
    ids += await log.append(run, [new(2)])
    found = await log.read(run, after=START)
    assert [e.data for e in found] == ['{"i":0}', '{"i":1}', '{"i":2}']
    assert [e.id for e in found] == ids
    assert [parse_event_id(i) for i in ids] == sorted(parse_event_id(i) for i in ids)
    assert len(set(ids)) == 3
    assert [e.data for e in await log.read(run, after=ids[0])] == ['{"i":1}', '{"i":2}']
    assert await log.read(run, after=ids[-1]) == []
    assert found[0].event == "values" and found[0].mode == "values"


async def test_a_blocked_reader_wakes_on_the_next_event(log: EventLog) -> None:
    """A reader waiting on an empty log gets the next event as soon as it is appended."""
    run = uuid.uuid4()
    reader = asyncio.create_task(log.read(run, after=START, block_s=30))
    await asyncio.sleep(0)  # let the reader block first
    await log.append(run, [new(7)])
    found = await asyncio.wait_for(reader, 30)
    assert [e.data for e in found] == ['{"i":7}']


async def test_a_blocked_read_with_nothing_new_returns_empty(log: EventLog) -> None:
    """When nothing comes within the block time, the read returns no events."""
    run = uuid.uuid4()
    await log.append(run, [new(1)])
    last = await log.last_id(run)
    assert await log.read(run, after=last, block_s=0.1) == []


async def test_a_log_keeps_its_newest_events_only(log: EventLog) -> None:
    """Past its bound a log drops its oldest events (Redis trims approximately), and
    always keeps the newest."""
    run = uuid.uuid4()
    for start in range(0, 300, 50):
        await log.append(run, [new(i) for i in range(start, start + 50)])
    found = [e.data for e in await log.read(run, after=START, limit=1000)]
    assert len(found) < 300
    assert found[-1] == '{"i":299}'
    assert '{"i":0}' not in found


async def test_last_id_reads_only_what_comes_next(log: EventLog) -> None:
    """Reading after ``last_id`` skips what was there and sees the next event; an empty
    log's last id is the start."""
    run = uuid.uuid4()
    assert await log.last_id(run) == START
    await log.append(run, [new(1), new(2)])
    last = await log.last_id(run)
    await log.append(run, [new(3)])
    assert [e.data for e in await log.read(run, after=last)] == ['{"i":3}']


async def test_ids_that_are_not_event_ids_are_refused(log: EventLog) -> None:
    """A Last-Event-ID that is not ``<ms>-<seq>`` raises InvalidEventId."""
    with pytest.raises(InvalidEventId):
        await log.read(uuid.uuid4(), after="not-an-id")


async def test_deleted_logs_are_empty_and_logs_are_separate(log: EventLog) -> None:
    """Each run has a log of its own; a deleted one reads empty."""
    first, second = uuid.uuid4(), uuid.uuid4()
    await log.append(first, [new(1)])
    await log.append(second, [new(2)])
    await log.delete(first)
    assert await log.read(first) == []
    assert [e.data for e in await log.read(second)] == ['{"i":2}']


@pytest.mark.redis
async def test_redis_streams_are_bounded_in_time(redis_url: str) -> None:
    """Every append (re)sets the Redis stream's time to live."""
    import redis.asyncio as redis

    prefix = f"lgd-test-{uuid.uuid4().hex[:8]}"
    log = RedisEventLog(redis_url, prefix=prefix, maxlen=10, ttl_s=120)
    client = redis.Redis.from_url(redis_url)
    try:
        run = uuid.uuid4()
        await log.append(run, [new(1)])
        assert 0 < await client.ttl(log.key(run)) <= 120
    finally:
        await client.delete(log.key(run))
        await client.aclose()
        await log.close()


async def test_memory_logs_expire_after_their_last_event() -> None:
    """The memory backend drops a log once its time to live passed since its last event."""
    log = open_event_log("memory://", maxlen=10, ttl_s=0.05)
    run = uuid.uuid4()
    await log.append(run, [new(1)])
    other = uuid.uuid4()

    async def gone() -> bool:
        await log.append(other, [new(2)])  # activity sweeps expired logs
        return await log.read(run) == []

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await gone():
        assert loop.time() < deadline, "the log never expired"
        await asyncio.sleep(0.02)
