"""``python -m bench.drain``: user and system CPU per execution, for the limit and for one
worker draining a backlog (BENCHMARKS.md, "Fourth round").

``bench.instructions`` counts the instructions a process runs in user space; what the
kernel does for it (system calls, page faults, the TLB flushes an ``munmap`` costs a
process with threads) and what the hardware loses after it are not in that count. This
splits the CPU time of the same two runs into user and system, from ``/proc`` for the
worker and ``getrusage`` for the limit (its threads included, as the worker's are): the
worker's greenlets of the pool showed there and not in the count.

The worker is started, warmed up and paused; the backlog is submitted; its CPU time is
read when it is let go and again once it has drained the backlog. The limit runs in this
process, on the loop a worker runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.load import submit
from bench.scenarios import STEPS, limit_runs
from bench.stack import Stack
from lg_deploy.run import loops
from tests.conftest import PG_ADMIN_URL, REDIS_URL
from tests.harness import Worker, poll, user_system_seconds

CONCURRENCY = 10
WARM_UP = 20


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that set a worker against the limit (this one and
    ``bench.instructions``): the servers, and the worker's command."""
    parser.add_argument("--postgres", default=PG_ADMIN_URL)
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument(
        "--lg-deploy",
        type=Path,
        default=Path(sys.executable).parent / "lg-deploy",
        help="the worker's command: another checkout's, to compare commits",
    )


def drain(
    stack: Stack,
    worker: Worker,
    count: int,
    resumed: Callable[[], None],
    drained: Callable[[], None],
) -> None:
    """Warm ``worker`` up, pause it, submit ``count`` executions of ``steps`` and let it go:
    ``resumed`` is called as it starts on the backlog, ``drained`` once every execution of
    it has completed."""
    assert stack.api is not None
    submit(stack.api.url, [STEPS] * WARM_UP, 4, settled=stack.settled)
    os.killpg(worker.pid, signal.SIGSTOP)
    ids = submit(stack.api.url, [STEPS] * count, 16).ids
    os.killpg(worker.pid, signal.SIGCONT)
    resumed()
    poll(lambda: _completed(stack, ids) == count, timeout=60 + count, interval=0.5)
    drained()


def _completed(stack: Stack, ids: Sequence[str]) -> int:
    return sum(row.status == "COMPLETED" for row in stack.timings(ids))


def _per_execution(before: tuple[float, float], after: tuple[float, float], count: int) -> Any:
    user, system = (1000 * (a - b) / count for a, b in zip(after, before, strict=True))
    return {"user_ms": round(user, 3), "system_ms": round(system, 3)}


def _total(part: Any) -> float:
    return float(part["user_ms"] + part["system_ms"])


def _limit(stack: Stack, count: int) -> Any:
    def used() -> tuple[float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime, usage.ru_stime

    async def measure() -> Any:
        async with limit_runs(stack.database_url, CONCURRENCY, "sync") as run:
            await run(WARM_UP)
            before = used()
            await run(count)
            return _per_execution(before, used(), count)

    return loops.run(measure(), "auto")


def _worker(stack: Stack, folder: Path, count: int, lg_deploy: Path) -> Any:
    worker = Worker(folder / "worker.log", dict(stack.fleet.env), command=lg_deploy)
    worker.start().wait_ready(timeout=60)
    readings: list[tuple[float, float]] = []
    try:
        drain(
            stack,
            worker,
            count,
            resumed=lambda: readings.append(user_system_seconds(worker.pid)),
            drained=lambda: readings.append(user_system_seconds(worker.pid)),
        )
    finally:
        worker.stop()
    return _per_execution(readings[0], readings[1], count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=Path("bench-drain.json"))
    add_stack_arguments(parser)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="lg-deploy-drain-"))
    stack = Stack(folder, args.postgres, args.redis, LG_DEPLOY_EVENT_LOOP="auto")
    stack.open()
    try:
        stack.start_api()
        limit = _limit(stack, args.executions)
        worker = _worker(stack, folder, args.executions, args.lg_deploy)
    finally:
        stack.close()
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "executions": args.executions,
        "limit": limit,
        "worker": worker,
        "ratio": round(_total(limit) / _total(worker), 3),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"CPU ms per execution: limit user {limit['user_ms']:.2f} + system "
        f"{limit['system_ms']:.2f}; worker user {worker['user_ms']:.2f} + system "
        f"{worker['system_ms']:.2f} (limit / worker {result['ratio']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
