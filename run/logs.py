"""Logging set-up for every lg-deploy process: human-readable text (the default, and what
``lg-deploy dev`` is for) or JSON lines for a log pipeline (``LG_DEPLOY_LOG_FORMAT=json``).

A JSON line holds time, level, logger and message, the fields the current task bound
(``core/logcontext.py``: request_id, execution_id, graph_id, thread_id, attempt), the
process's own (worker), and the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from lg_deploy.core import logcontext


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **logcontext.current(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Configure the root logger of this process."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic announces every plugin it loads at INFO; lg-deploy logs each request itself.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
