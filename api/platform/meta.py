"""``/ok`` and ``/info``: the platform's health check and what this server offers."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Response

from lg_deploy.api.platform.errors import PlatformRoute
from lg_deploy.api.platform.render import json_response

router = APIRouter(tags=["meta"], route_class=PlatformRoute)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@router.get("/ok", summary="The server is up (the platform's health check)")
async def ok() -> Response:
    return json_response({"ok": True})


@router.get("/info", summary="The server's version and the features it offers")
async def info() -> Response:
    return json_response(
        {
            "version": _version("lg-deploy"),
            "langgraph_py_version": _version("langgraph"),
            "flags": {
                "assistants": True,
                "crons": False,
                "langsmith": False,
                "langsmith_tracing_replicas": False,
            },
            "host": {"kind": "lg-deploy", "project_id": None, "revision_id": None},
        }
    )
