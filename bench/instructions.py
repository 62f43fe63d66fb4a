"""``python -m bench.instructions``: instructions per execution, counted by valgrind's
callgrind, for the limit and for one worker draining a backlog (BENCHMARKS.md, "Third
round").

CPU time on a shared two-core machine moves by 15 % from one run to the next; a count of
the instructions a process executes does not depend on what else the machine does, so
two commits compare within a fraction of a percent. It counts user space only: the kernel
time of system calls (a round trip's send and receive) is not in it. The worker runs
under callgrind about thirty times slower than it would, so its background work (loop
ticks, the reconciler, the memory trim) weighs more per execution here than in
production: an idle worker's count per second is reported beside it.

The limit is counted in a process of its own (``--limit-child``); the worker is started
paused, the backlog submitted, and callgrind's instrumentation turned on (with
``callgrind_control``) only while it drains it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.drain import CONCURRENCY, WARM_UP, add_stack_arguments, drain
from bench.scenarios import limit_runs
from bench.stack import Stack
from lg_deploy.run import loops
from tests.harness import Worker


def _instrument(pid: int, on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(pid)],
        check=True,
        capture_output=True,
    )


def _dump(pid: int) -> None:
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)


def _total(out: Path) -> int:
    """Instructions in every dump callgrind wrote to ``out``.*"""
    total = 0
    for part in out.parent.glob(out.name + "*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


def limit_child(database_url: str, count: int) -> None:
    """The limit's own process (under callgrind): bare ``ainvoke``, counted."""

    async def measure() -> None:
        async with limit_runs(database_url, CONCURRENCY, "sync") as run:
            await run(WARM_UP)
            _instrument(os.getpid(), True)
            await run(count)
            _instrument(os.getpid(), False)
            _dump(os.getpid())

    loops.run(measure(), "auto")


def _count_limit(stack: Stack, folder: Path, count: int) -> int:
    out = folder / "limit.callgrind"
    command = [sys.executable, "-m", "bench.instructions", "--limit-child", stack.database_url]
    subprocess.run([*_callgrind(out), *command, str(count)], check=True, capture_output=True)
    return _total(out)


def _worker(stack: Stack, folder: Path, name: str, lg_deploy: Path) -> tuple[Worker, Path]:
    out = folder / f"{name}.callgrind"
    wrapper = folder / f"{name}.sh"
    command = " ".join([*_callgrind(out), str(lg_deploy)])  # valgrind follows its #! line
    wrapper.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    wrapper.chmod(0o755)
    worker = Worker(folder / f"{name}.log", dict(stack.fleet.env), command=wrapper)
    worker.start().wait_ready(timeout=600)
    return worker, out


def _count_worker(stack: Stack, folder: Path, count: int, lg_deploy: Path) -> int:
    worker, out = _worker(stack, folder, "worker", lg_deploy)

    def drained() -> None:
        _instrument(worker.pid, False)
        _dump(worker.pid)

    try:
        # callgrind_control needs the process running: it is turned on once it is let go.
        drain(stack, worker, count, resumed=lambda: _instrument(worker.pid, True), drained=drained)
    finally:
        worker.stop()
    return _total(out)


def _count_idle(stack: Stack, folder: Path, seconds: float, lg_deploy: Path) -> int:
    worker, out = _worker(stack, folder, "idle", lg_deploy)
    try:
        _instrument(worker.pid, True)
        time.sleep(seconds)
        _instrument(worker.pid, False)
        _dump(worker.pid)
    finally:
        worker.stop()
    return _total(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--executions", type=int, default=400)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=Path("bench-instructions.json"))
    add_stack_arguments(parser)
    parser.add_argument("--limit-child", nargs=2, metavar=("DATABASE_URL", "N"))
    args = parser.parse_args(argv)
    if args.limit_child:
        limit_child(args.limit_child[0], int(args.limit_child[1]))
        return 0
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("bench.instructions needs valgrind (apt-get install valgrind)")
    folder = Path(tempfile.mkdtemp(prefix="lg-deploy-instructions-"))
    stack = Stack(folder, args.postgres, args.redis, LG_DEPLOY_EVENT_LOOP="auto")
    # Under callgrind the worker is slow: keep its leases and the loop watch out of the way.
    stack.fleet.env |= {"LG_DEPLOY_LEASE_S": "600", "LG_DEPLOY_LOOP_WARN_S": "3600"}
    stack.fleet.env |= {"LG_DEPLOY_LOOP_BLOCK_LIMIT_S": "3600"}
    stack.open()
    try:
        stack.start_api()
        count = args.executions
        limit = _count_limit(stack, folder, count) / count
        worker = _count_worker(stack, folder, count, args.lg_deploy) / count
        idle = _count_idle(stack, folder, args.idle_s, args.lg_deploy) / args.idle_s
    finally:
        stack.close()
        shutil.rmtree(folder, ignore_errors=True)
    result: dict[str, Any] = {
        "executions": count,
        "limit_per_execution": round(limit),
        "worker_per_execution": round(worker),
        "worker_idle_per_s": round(idle),
        "ratio": round(limit / worker, 3),
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"instructions per execution: limit {limit / 1e6:.2f} M, worker {worker / 1e6:.2f} M"
        f" (limit / worker {result['ratio']}); an idle worker {idle / 1e6:.2f} M per second"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
