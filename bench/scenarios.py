"""The scenarios of a run. Each measures one thing on the stack, returns its figures, and
leaves the stack idle (no execution waiting) for the next one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from langchain_core.runnables import RunnableConfig

from bench.load import BenchError, Submitted, get_latencies, latency, submit
from bench.proxy import Proxies, Tally
from bench.seed import Seeder
from bench.stack import PARTS, Stack, Timing, address, per_execution_ms, with_address
from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.graphs import load_registry
from lg_deploy.run import loops
from lg_deploy.worker.runner import Durability
from tests.conftest import EXAMPLES
from tests.harness import Server, poll, wait
from tests.harness import submit as submit_one

STEPS: dict[str, Any] = {"graph_id": "steps", "input": {"text": "hi"}}


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does; the defaults take a few minutes on 2 cores."""

    limit_executions: int = 500
    executions: int = 500  # per end-to-end run
    clients: int = 16  # submitting clients of an end-to-end run
    submit_requests: int = 500  # per client count
    submit_clients: tuple[int, ...] = (1, 16, 64)
    pickup_samples: int = 40
    io_sleep_s: float = 1.0
    io_executions_per_slot: int = 3
    memory_executions: int = 2000
    memory_samples: int = 10
    history: tuple[int, ...] = (0, 100_000)
    history_executions: int = 300
    thread_history: int = 10_000
    thread_executions: int = 40
    round_trip_executions: int = 200
    idle_s: float = 5.0
    recovery_rounds: int = 3


SMOKE = Sizes(
    limit_executions=20,
    executions=30,
    clients=4,
    submit_requests=20,
    submit_clients=(1, 4),
    pickup_samples=5,
    io_sleep_s=0.3,
    io_executions_per_slot=1,
    memory_executions=40,
    memory_samples=3,
    history=(0, 1000),
    history_executions=20,
    thread_history=100,
    thread_executions=4,
    round_trip_executions=20,
    idle_s=1.0,
    recovery_rounds=1,
)


def _slope_per_1000(done: list[float], rss_kb: list[float]) -> float | None:
    """KB per 1,000 executions, a least-squares fit; None with fewer than 2 samples."""
    if len(done) < 2:
        return None
    return round(statistics.linear_regression(done, rss_kb).slope * 1000, 1)


@contextlib.asynccontextmanager
async def limit_runs(
    database_url: str, concurrency: int, durability: Durability
) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """The limit: ``run(n)`` runs ``steps`` ``n`` times by bare ``ainvoke``, ``concurrency``
    at a time, each on a new thread, on lg-deploy's own checkpointer of ``database_url``."""
    registry = load_registry(EXAMPLES)
    async with open_checkpointer(database_url) as saver:
        graph = await registry.build("steps", {}, saver)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            config: RunnableConfig = {"configurable": {"thread_id": str(uuid.uuid4())}}
            async with slots:
                await graph.ainvoke(STEPS["input"], config, durability=durability)

        async def run(count: int) -> None:
            await asyncio.gather(*(one() for _ in range(count)))

        yield run


def _span_s(rows: list[Timing], since_started: bool = False) -> float:
    """From the first queued (or started) to the last finished."""
    first = min(r.started_at if since_started else r.queued_at for r in rows)
    return (max(r.finished_at for r in rows) - first).total_seconds()


def _waits(rows: list[Timing]) -> list[float]:
    """Pickup: from runnable (queued_at) to claimed (started_at), by the database's clock;
    what the worker's lg_deploy_queue_wait_seconds observes, without its buckets."""
    return [(r.started_at - r.queued_at).total_seconds() for r in rows]


class Scenarios:
    def __init__(
        self, stack: Stack, sizes: Sizes, concurrency: int, durability: Durability
    ) -> None:
        self.stack = stack
        self.sizes = sizes
        self.concurrency = concurrency
        self.durability = durability
        self.figures: dict[str, Any] = {}
        self.seeder = Seeder(stack.database_url)

    @property
    def api(self) -> Server:
        assert self.stack.api is not None
        return self.stack.api

    @property
    def api_url(self) -> str:
        return self.api.url

    def _run(
        self, bodies: list[dict[str, Any]], clients: int, per_s: float | None = None
    ) -> tuple[Submitted, list[Timing], dict[str, float]]:
        """Submit, wait until the workers have settled them all, and check that every
        one COMPLETED; with the CPU each part used per execution meanwhile."""
        cpu = self.stack.cpu()
        submitted = submit(self.api_url, bodies, clients, per_s=per_s, settled=self.stack.settled)
        used = per_execution_ms(cpu, self.stack.cpu(), len(bodies))
        rows = self.stack.timings(submitted.ids)
        statuses = Counter(row.status for row in rows)
        if statuses != {"COMPLETED": len(bodies)}:
            raise BenchError(f"expected {len(bodies)} COMPLETED, got {dict(statuses)}")
        return submitted, rows, used

    def _end_to_end(self, count: int) -> dict[str, Any]:
        _, rows, cpu = self._run([STEPS] * count, self.sizes.clients)
        return {"executions_per_s": round(count / _span_s(rows), 2), "cpu_ms": cpu}

    # -- the scenarios, in the order a full run takes them

    def limit(self) -> None:
        """The same graph, checkpointer and durability, by bare ``ainvoke`` in this process
        (as many at once as a worker runs)."""
        self.figures["limit"] = self._limit()

    def _limit(self) -> dict[str, Any]:
        count = self.sizes.limit_executions

        async def measure() -> tuple[float, dict[str, float]]:
            runs = limit_runs(self.stack.database_url, self.concurrency, self.durability)
            async with runs as run:
                await run(10)
                cpu, start = self.stack.cpu(), time.perf_counter()
                await run(count)
                seconds = time.perf_counter() - start
                return seconds, per_execution_ms(cpu, self.stack.cpu(), count)

        # On the loop a worker runs on (run/loops.py), so that the ratio is about lg-deploy.
        seconds, cpu = loops.run(measure(), "auto")
        return {
            "executions": count,
            "executions_per_s": round(count / seconds, 2),
            "cpu_ms": {"in_process": cpu["bench"], "postgres": cpu["postgres"]},
        }

    def submissions(self) -> None:
        """POST /execute with no worker running, at each client count."""
        self.stack.scale(0)
        rows = []
        for clients in self.sizes.submit_clients:
            cpu = self.stack.cpu()
            done = submit(self.api_url, [STEPS] * self.sizes.submit_requests, clients, warm=True)
            used = per_execution_ms(cpu, self.stack.cpu(), len(done.ids) + clients)
            self.stack.forget_queued()
            rows.append(
                {
                    "clients": clients,
                    **latency(done.latencies),
                    "submissions_per_s": round(done.per_s, 1),
                    "cpu_ms": {part: used[part] for part in ("api", "postgres", "bench")},
                }
            )
        self.figures["submit"] = rows

    def pickup_idle(self) -> None:
        """One execution at a time into an idle worker, at random moments of its poll."""
        self.stack.scale(1)
        pause = random.Random(7)
        ids = []
        for _ in range(self.sizes.pickup_samples):
            time.sleep(pause.uniform(0.05, 0.25))
            ids.append(submit_one(self.api, "steps", STEPS["input"]))
            wait(self.api, ids[-1])
        self.figures.setdefault("pickup", {})["idle"] = latency(_waits(self.stack.timings(ids)))

    def end_to_end(self) -> None:
        """Throughput with 1 and 2 workers, each after a warm-up, and each over the limit
        measured again just before it (the workers idle meanwhile): this machine's speed
        drifts within minutes, and a full run reaches this scenario minutes after the
        limit's own."""
        runs = []
        for workers in (1, 2):
            self.stack.scale(workers)
            self._run([STEPS] * 20, self.sizes.clients)
            limit = self._limit()["executions_per_s"]
            run = self._end_to_end(self.sizes.executions)
            ratio = round(run["executions_per_s"] / limit, 3)
            runs.append(
                {
                    "workers": workers,
                    **run,
                    "limit_executions_per_s": limit,
                    "ratio_to_limit": ratio,
                }
            )
        self.stack.scale(1)
        self.figures["end_to_end"] = runs

    def pickup_under_load(self) -> None:
        """Submissions at a steady half of what one worker finishes per second."""
        self.stack.scale(1)
        measured = self.figures.get("end_to_end", [{}])[0].get("executions_per_s", 20)
        rate = measured / 2
        count = max(self.sizes.executions // 2, 10)
        _, rows, _ = self._run([STEPS] * count, 16, per_s=rate)
        self.figures.setdefault("pickup", {})["under_load"] = {
            "submissions_per_s": round(rate, 1),
            **latency(_waits(rows)),
        }

    def io_bound(self) -> None:
        """A graph that only sleeps, ``io_executions_per_slot`` per slot of one worker:
        achieved concurrency is the graph's sleep over the span it took."""
        self.stack.scale(1)
        sleep_s = self.sizes.io_sleep_s
        count = self.concurrency * self.sizes.io_executions_per_slot
        body = {"graph_id": "slow", "input": {"steps": 1, "sleep_s": sleep_s}}
        _, rows, _ = self._run([body] * count, self.sizes.clients)
        achieved = count * sleep_s / _span_s(rows, since_started=True)
        self.figures["io_bound"] = {
            "configured": self.concurrency,
            "achieved": round(achieved, 2),
            "ratio": round(achieved / self.concurrency, 3),
        }

    def memory(self) -> None:
        """Resident memory of a new worker while it runs ``memory_executions``, in batches;
        the slope is fitted past the first batch, and over the second half of the batches,
        well past the warm-up. The worker prunes every 2 s, so that its first prune pass
        (its statements compiled and prepared: about 1 MB, once) falls in the warm-up
        rather than anywhere in the run."""
        self.stack.scale(0)
        [worker] = self.stack.scale(1, LG_DEPLOY_PRUNE_INTERVAL_S="2")
        batch = max(self.sizes.memory_executions // self.sizes.memory_samples, 1)
        done, rss = [], []
        for _ in range(self.sizes.memory_samples):
            self._run([STEPS] * batch, self.sizes.clients)
            done.append(worker.metrics().value("lg_deploy_attempts_started_total"))
            rss.append(worker.rss_bytes() / 1024)
        self.stack.scale(0)
        half = len(done) // 2
        self.figures["memory"] = {
            "executions": int(done[-1]),
            "rss_mb": round(rss[-1] / 1024, 1),
            "slope_kb_per_1000": _slope_per_1000(done[1:], rss[1:]),
            "late_executions": int(done[-1] - done[half - 1]) if half else 0,
            "late_slope_kb_per_1000": _slope_per_1000(done[half:], rss[half:]),
        }

    def recovery(self) -> None:
        """SIGKILL the worker running a multi-step execution: seconds until another
        worker runs it again, with a 3 s lease and a reconciler every second."""
        self.stack.scale(0)
        short = {"LG_DEPLOY_LEASE_S": "3", "LG_DEPLOY_RECONCILE_INTERVAL_S": "1"}
        moment = random.Random(11)
        seconds = []
        for _ in range(self.sizes.recovery_rounds):
            self.stack.scale(2, **short)  # again two, after the kill of the round before
            execution_id = submit_one(self.api, "slow", {"steps": 40, "sleep_s": 0.25})
            owner = poll(partial(self.stack.lease_owner, execution_id), what="a claim")
            # Somewhere in the heartbeat cycle (a third of the lease).
            time.sleep(1 + moment.uniform(0, 1))
            self.stack.fleet.worker_with_pid(int(owner.split(":")[1])).stop()
            killed = time.monotonic()
            poll(partial(self.stack.lease_owner, execution_id, 2), what="a take-over")
            seconds.append(time.monotonic() - killed)
            cancel = httpx.post(f"{self.api_url}/executions/{execution_id}/cancel", timeout=10)
            if cancel.status_code != 200:
                raise BenchError(f"cancel: {cancel.status_code} {cancel.text}")
        self.stack.scale(0)
        self.figures["recovery"] = {
            "lease_s": 3,
            "reconcile_interval_s": 1,
            "median_s": round(statistics.median(seconds), 2),
            "max_s": round(max(seconds), 2),
        }

    def history(self) -> None:
        """End-to-end cost with ``history`` finished executions already in the store
        (seeded), from an empty store up."""
        self.stack.scale(1)
        tables = self.stack.db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " AND tablename IN ('executions', 'checkpoints', 'checkpoint_blobs',"
            " 'checkpoint_writes')"
        )
        self.stack.db.execute(f"TRUNCATE {', '.join(t for (t,) in tables)}")
        self.seeder.seeded, rows = 0, []
        for size in sorted(self.sizes.history):
            self.seeder.add(size - self.seeder.seeded)
            run = self._end_to_end(self.sizes.history_executions)
            listing = get_latencies(self.api_url, "/executions?limit=50", 20)
            rows.append({"executions_in_store": size, **run, **_prefixed("list", listing)})
        self.figures["history"] = rows

    def thread(self) -> None:
        """Executions on one thread (they run one at a time): on a thread of their own,
        and on one with ``thread_history`` finished executions (seeded); in the order
        new, busy, busy, new, so that a drift of the machine hits both alike."""
        self.stack.scale(1)
        threads = {name: f"bench-{name}-{uuid.uuid4().hex[:8]}" for name in ("new", "busy")}
        self.seeder.add(self.sizes.thread_history, thread_id=threads["busy"])
        count = max(self.sizes.thread_executions // 2, 1)
        seconds = dict.fromkeys(threads, 0.0)
        cpu = {name: dict.fromkeys(PARTS, 0.0) for name in threads}
        for name in ("new", "busy", "busy", "new"):
            _, rows, used = self._run([{**STEPS, "thread_id": threads[name]}] * count, 1)
            seconds[name] += _span_s(rows)
            for part, ms in used.items():
                cpu[name][part] += ms / 2
        self.figures["thread"] = {
            "history": self.sizes.thread_history,
            **{
                name: {
                    "ms_per_execution": round(500 * seconds[name] / count, 1),
                    "cpu_ms": {part: round(ms, 2) for part, ms in cpu[name].items()},
                }
                for name in ("new", "busy")
            },
        }

    def round_trips(self) -> None:
        """An API and a worker of their own, each connected through counting proxies:
        round trips per execution while running, and per second while idle."""
        self.stack.stop_all()
        proxies = Proxies()
        try:
            env = {}
            for part in ("api", "worker"):
                pg = proxies.open(f"{part}/postgres", "postgres", address(self.stack.database_url))
                redis = proxies.open(f"{part}/redis", "redis", address(self.stack.redis_url))
                env[part] = {
                    "LG_DEPLOY_DATABASE_URL": with_address(self.stack.database_url, pg),
                    "LG_DEPLOY_QUEUE_URL": with_address(self.stack.redis_url, redis),
                }
            self.stack.start_api(**env["api"])
            self.stack.scale(1, **env["worker"])
            self._run([STEPS] * 10, self.sizes.clients)
            before = proxies.counts()
            count = self.sizes.round_trip_executions
            self._run([STEPS] * count, self.sizes.clients)
            running = proxies.counts()
            time.sleep(self.sizes.idle_s)  # the window measured, not a wait for anything
            idle = proxies.counts()
        finally:
            self.stack.stop_all()
            proxies.close()
        busy = {name: running[name] - before[name] for name in running}
        quiet = {name: idle[name] - running[name] for name in idle}
        self.figures["round_trips"] = {
            "executions": count,
            "per_execution": _round_trips(busy, count),
            "idle_per_s": _round_trips(quiet, self.sizes.idle_s),
            "connections_opened": {name: tally.connections.total() for name, tally in busy.items()},
            "statements_per_execution": {
                name: {kind: round(n / count, 2) for kind, n in tally.statements.most_common()}
                for name, tally in busy.items()
            },
        }


def _prefixed(name: str, latencies: list[float]) -> dict[str, float]:
    return {f"{name}_{key}": value for key, value in latency(latencies).items() if "p50" in key}


def _round_trips(tallies: dict[str, Tally], per: float) -> dict[str, float]:
    """Round trips of each process and driver, divided by ``per``."""
    trips = {
        "api_postgres": tallies["api/postgres"].round_trips["asyncpg"],
        "worker_store": tallies["worker/postgres"].round_trips["asyncpg"],
        "worker_checkpointer": tallies["worker/postgres"].round_trips["psycopg"],
        "api_redis": tallies["api/redis"].round_trips["redis"],
        "worker_redis": tallies["worker/redis"].round_trips["redis"],
    }
    figures = {key: round(n / per, 2) for key, n in trips.items()}
    figures["postgres"] = round(sum(n for k, n in trips.items() if "redis" not in k) / per, 2)
    figures["redis"] = round((trips["api_redis"] + trips["worker_redis"]) / per, 2)
    return figures
