"""The metrics port of ``lg-deploy worker``: /metrics, /healthz and /readyz, served from a
thread of its own so that they answer even while the worker's event loop is blocked.

- /healthz (liveness): 503 once the worker should be restarted (its event loop stuck past
  ``LG_DEPLOY_LOOP_BLOCK_LIMIT_S``, or its queue loop gone); a database or Redis outage is
  not a reason: the worker waits it out.
- /readyz: 200 once the worker serves the queue.
- /metrics: Prometheus.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# None while healthy, else why the process should be restarted.
Liveness = Callable[[], str | None]


class ProbeServer:
    def __init__(self, addr: str, port: int) -> None:
        self.liveness: Liveness = lambda: None
        self.serving = False
        probes = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    problem = probes.liveness()
                    self._health(503 if problem else 200, problem)
                elif self.path == "/readyz":
                    self._health(
                        200 if probes.serving else 503, None if probes.serving else "starting"
                    )
                else:
                    self._answer(404, b"not found\n", "text/plain")

            def do_HEAD(self) -> None:
                self.do_GET()

            def _health(self, status: int, problem: str | None) -> None:
                body = {"status": "unavailable" if problem else "ok"}
                if problem:
                    body["reason"] = problem
                self._answer(status, json.dumps(body).encode(), "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the worker's own log

        self.server = ThreadingHTTPServer((addr, port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="lg-deploy-probes", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
