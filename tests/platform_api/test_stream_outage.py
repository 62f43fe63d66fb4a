"""A worker publishing a platform run's stream through a Redis outage (worker/streaming.py):
a redis-server of the test's own is stopped and started again, on the same port."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

from lg_deploy.core.events import EventLog, open_event_log
from lg_deploy.worker.streaming import RETRY_AFTER_S, RunStream
from tests.harness import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture
async def events(own_redis: RedisServer) -> AsyncIterator[EventLog]:
    log = open_event_log(own_redis.url)
    try:
        yield log
    finally:
        await log.close()


class Clock:
    """The stream's backoff clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_publishing_resumes_after_a_redis_outage(
    own_redis: RedisServer, events: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    """When Redis goes away, the stream drops its events and tries again after a backoff
    that doubles while Redis stays down; once Redis is back, the next append after the
    backoff succeeds and publishing goes on (it used to stop for the rest of the attempt
    after the first error). The outage is logged once, not once per event."""
    clock = Clock()
    run = uuid.uuid4()
    stream = RunStream(events, run, 1, ["custom"], held=lambda: True, now=clock)

    async def send(n: int) -> None:
        await stream.chunk((), "custom", {"n": n})

    async def published() -> list[int]:
        return [json.loads(e.data)["n"] for e in await events.read(run)]

    await send(1)
    assert await published() == [1]
    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="lg_deploy.worker"):
        await send(2)  # fails: the outage starts
        clock.t += RETRY_AFTER_S / 2
        await send(3)  # within the backoff: not tried
        clock.t += RETRY_AFTER_S
        await send(4)  # tried, fails again: the backoff doubles
        own_redis.start()  # empty again: the server keeps nothing on disk
        clock.t += RETRY_AFTER_S * 1.5
        await send(5)  # Redis is back, but the doubled backoff has not passed
        clock.t += RETRY_AFTER_S
        await send(6)
        await send(7)
    assert await published() == [6, 7]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
