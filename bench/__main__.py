"""``python -m bench``: run the benchmarks (BENCHMARKS.md), print a table, write JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from bench.report import table
from bench.scenarios import SMOKE, Scenarios, Sizes
from bench.stack import Stack, product_default
from lg_deploy.run import loops
from lg_deploy.worker.runner import Durability
from tests.conftest import PG_ADMIN_URL, REDIS_URL

# In the order of a full run: the limit first, with no process started yet; submissions
# with no worker yet; the proxied round trips last, as they stop the rest.
SCENARIOS = (
    "limit",
    "submissions",
    "pickup_idle",
    "end_to_end",
    "pickup_under_load",
    "io_bound",
    "memory",
    "recovery",
    "history",
    "thread",
    "round_trips",
)


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every scenario, fast")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="default: all of %(default)s")
    parser.add_argument("--json", type=Path, default=Path(".lg-deploy/bench.json"))
    parser.add_argument("--postgres", default=PG_ADMIN_URL, help="a role that may create databases")
    parser.add_argument("--redis", default=REDIS_URL)
    parser.add_argument(
        "--durability", choices=get_args(Durability), default=product_default("durability")
    )
    parser.add_argument(
        "--concurrency", type=int, default=product_default("worker_concurrency"), help="per worker"
    )
    sizes = parser.add_argument_group("sizes (BENCHMARKS.md says what each scenario does)")
    for field in dataclasses.fields(Sizes):
        kind = type(field.default)
        sizes.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=(lambda text: tuple(int(v) for v in text.split(","))) if kind is tuple else kind,
            metavar="N,N" if kind is tuple else "N",
            help=f"default {_shown(field.default)}, smoke {_shown(getattr(SMOKE, field.name))}",
        )
    return parser


def _commit() -> str:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return git.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes)}
    sizes = dataclasses.replace(
        SMOKE if args.smoke else Sizes(), **{k: v for k, v in chosen.items() if v is not None}
    )
    only = args.only.split(",")
    if unknown := set(only) - set(SCENARIOS):
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    result: dict[str, Any] = {
        "machine": {
            "commit": _commit(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "load": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "options": {
            "durability": args.durability,
            "concurrency": args.concurrency,
            # What the workers and the limit run on (LG_DEPLOY_EVENT_LOOP=auto).
            "event_loop": loops.chosen("auto"),
            "smoke": args.smoke,
            "sizes": dataclasses.asdict(sizes),
        },
    }
    folder = Path(tempfile.mkdtemp(prefix="lg-deploy-bench-"))
    stack = Stack(
        folder,
        args.postgres,
        args.redis,
        LG_DEPLOY_DURABILITY=args.durability,
        LG_DEPLOY_WORKER_CONCURRENCY=str(args.concurrency),
        LG_DEPLOY_EVENT_LOOP="auto",
    )
    run = Scenarios(stack, sizes, args.concurrency, args.durability)
    result["figures"] = run.figures
    stack.open()
    finished = False
    try:
        for name in SCENARIOS:
            if name in only:
                started = time.monotonic()
                if name != "limit" and stack.api is None:
                    stack.start_api()
                getattr(run, name)()
                took = time.monotonic() - started
                print(f"bench: {name} took {took:.1f} s", file=sys.stderr, flush=True)
        finished = True
    finally:
        stack.close()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        if finished:
            shutil.rmtree(folder)
        else:
            print(f"bench: failed; the process logs are in {folder}", file=sys.stderr)
    print(table(result))
    print(f"\n(written to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
