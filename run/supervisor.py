"""``lg-deploy worker --processes N``: N worker processes under one command, for a machine
outside Kubernetes with more cores than one worker can use (a worker runs on one core:
Python's event loop). In Kubernetes, run one worker per pod and scale the pods instead.

Each child is a whole ``lg-deploy worker`` with its own lease owner, its own connections
and, when ``LG_DEPLOY_METRICS_PORT`` is set, its own metrics port: the base port plus its
index. The supervisor passes SIGTERM and SIGINT on (each child drains as a single worker
does), starts again a child that dies, and exits once every child has stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from lg_deploy.core.settings import Settings

log = logging.getLogger("lg_deploy.worker")

# A child that dies sooner than this after its start is not started again at once.
_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


class Supervisor:
    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        self.children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.failures = [0] * processes
        self.stopping = False

    def child_env(self, index: int) -> dict[str, str]:
        env = {**os.environ, "LG_DEPLOY_WORKER_PROCESSES": "1"}
        if self.settings.metrics_port:
            env["LG_DEPLOY_METRICS_PORT"] = str(self.settings.metrics_port + index)
        if self.settings.config:
            env["LG_DEPLOY_CONFIG"] = self.settings.config
        env["LG_DEPLOY_WORKER_CONCURRENCY"] = str(self.settings.worker_concurrency)
        return env

    def start(self, index: int) -> None:
        command = [sys.executable, "-m", "lg_deploy.run.cli", "worker"]
        child = subprocess.Popen(command, env=self.child_env(index))
        self.children[index] = child
        log.info("worker process %d started (pid %d)", index, child.pid)

    def forward(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info(
                "%s: stopping %d worker processes", signal.Signals(signum).name, self.processes
            )
        self.stopping = True
        for child in self.children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.forward)
        started = [0.0] * self.processes
        for index in range(self.processes):
            self.start(index)
            started[index] = time.monotonic()
        codes = [0] * self.processes
        while True:
            alive = False
            for index, child in enumerate(self.children):
                if child is None:
                    continue
                code = child.poll()
                if code is None:
                    alive = True
                    continue
                codes[index] = code
                self.children[index] = None
                if self.stopping:
                    continue
                # A child that keeps dying right after its start waits longer each time.
                quick = time.monotonic() - started[index] < 60
                self.failures[index] = self.failures[index] + 1 if quick else 0
                wait = 0.0
                if self.failures[index]:
                    wait = _RESTART_BACKOFF_S[
                        min(self.failures[index], len(_RESTART_BACKOFF_S)) - 1
                    ]
                log.warning(
                    "worker process %d exited with %d; starting it again in %.0f s",
                    index,
                    code,
                    wait,
                )
                time.sleep(wait)
                if self.stopping:
                    continue
                self.start(index)
                started[index] = time.monotonic()
                alive = True
            if not alive:
                return max(codes) if any(codes) else 0
            time.sleep(0.2)
