"""``lg-deploy worker``: a worker process of the fleet, until SIGTERM or SIGINT.

The first signal stops taking work and lets running executions finish for ``drain_s``
seconds, then hands the rest back to the queue (no attempt is used up); a second signal,
at any time until the worker has stopped, hands them back at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.settings import Settings
from lg_deploy.run.probes import ProbeServer
from lg_deploy.run.wiring import open_backends, running_worker
from lg_deploy.worker.service import WorkerService

log = logging.getLogger("lg_deploy.worker")


async def run_worker(settings: Settings, registry: GraphRegistry) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    serving: list[WorkerService] = []

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info(
                "%s: finishing running executions (up to %.0f s), then stopping",
                signal.Signals(signum).name,
                settings.drain_s,
            )
            stop.set()
            return
        log.info("second signal: handing running executions back now")
        for worker in serving:
            worker.hand_back_all()

    probes = None
    if settings.metrics_port:
        probes = ProbeServer(settings.metrics_addr, settings.metrics_port)
        probes.start()
        log.info(
            "metrics and probes on http://%s:%d (/metrics, /healthz, /readyz)",
            settings.metrics_addr,
            settings.metrics_port,
        )
    # Installed until the drain is over, so that a second signal can cut it short.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with (
            open_backends(settings) as backends,
            running_worker(settings, registry, backends, drain_s=settings.drain_s) as worker,
        ):
            serving.append(worker)
            if probes is not None:
                probes.liveness = worker.alive
                probes.serving = True
            await stop.wait()
            if probes is not None:
                probes.serving = False
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if probes is not None:
            probes.stop()
