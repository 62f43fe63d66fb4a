"""Offline checks of Kubernetes objects shared by the deployment tests: strict schema
validation (Kubernetes' own schemas, KEDA's CRD, and the parts of the Prometheus Operator's
and KEDA's other CRDs the chart uses) and the security and probe properties every pod of
lg-deploy must have."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest one
# kubernetes-validate knows: objects must be valid on both.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

Obj = dict[str, Any]


def load_all(text: str) -> list[Obj]:
    """The non-empty YAML documents of ``text``."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def strict(schema: Any) -> Any:
    """``schema`` refusing properties it does not declare, the way the API server's strict
    field validation refuses unknown fields (CRD schemas leave them to pruning)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def keda_scaledobject_schema() -> Any:
    crd = yaml.safe_load((SCHEMAS / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict(version["schema"]["openAPIV3Schema"])


def _object(properties: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STRING = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_METADATA = {"type": "object", "required": ["name"]}

# The fields of the Prometheus Operator's ServiceMonitor and PrometheusRule and of KEDA's
# TriggerAuthentication that the chart may render, as their CRDs type them. No schema of
# those CRDs is kept here: these cover exactly what the chart writes, strictly.
HAND_WRITTEN_SCHEMAS: dict[tuple[str, str], Any] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _object(
        {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": _METADATA,
            "spec": _object(
                {
                    "selector": _object({"matchLabels": _STRING_MAP}, ["matchLabels"]),
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": _object(
                            {
                                "port": _STRING,
                                "path": _STRING,
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {
                                    "type": "string",
                                    "pattern": "^[0-9]+(ms|s|m|h)$",
                                },
                            },
                            ["port"],
                        ),
                    },
                },
                ["selector", "endpoints"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _object(
        {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": _METADATA,
            "spec": _object(
                {
                    "groups": {
                        "type": "array",
                        "items": _object(
                            {
                                "name": _STRING,
                                "interval": _STRING,
                                "limit": {"type": "integer"},
                                "rules": {
                                    "type": "array",
                                    "items": _object(
                                        {
                                            "alert": _STRING,
                                            "record": _STRING,
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _STRING,
                                            "keep_firing_for": _STRING,
                                            "labels": _STRING_MAP,
                                            "annotations": _STRING_MAP,
                                        },
                                        ["expr"],
                                    ),
                                },
                            },
                            ["name", "rules"],
                        ),
                    }
                },
                ["groups"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): _object(
        {
            "apiVersion": _STRING,
            "kind": _STRING,
            "metadata": _METADATA,
            "spec": _object(
                {
                    "secretTargetRef": {
                        "type": "array",
                        "minItems": 1,
                        "items": _object(
                            {"parameter": _STRING, "name": _STRING, "key": _STRING},
                            ["parameter", "name", "key"],
                        ),
                    }
                },
                ["secretTargetRef"],
            ),
        },
        ["apiVersion", "kind", "metadata", "spec"],
    ),
}


def validation_errors(obj: Obj) -> list[str]:
    """Why ``obj`` would be refused, one line each (none: it is valid). Every kind has a
    schema here; an object of an unknown kind is an error, never a silent pass."""
    kind, api_version = obj.get("kind", "?"), obj.get("apiVersion", "?")
    name = f"{kind} {obj.get('metadata', {}).get('name', '?')}"
    if (api_version, kind) == ("keda.sh/v1alpha1", "ScaledObject"):
        schema = keda_scaledobject_schema()
    elif (api_version, kind) in HAND_WRITTEN_SCHEMAS:
        schema = HAND_WRITTEN_SCHEMAS[(api_version, kind)]
    else:
        errors = []
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                return [f"{name}: no schema for {api_version} {kind} in Kubernetes {version}"]
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{name} (Kubernetes {version}) at {path}: {exc.message}")
        return errors
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{name} at {'.'.join(str(p) for p in error.path)}: {error.message}"
        for error in validator.iter_errors(obj)
    ]


# Pods -----------------------------------------------------------------------------------

POD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}


def pod_spec(obj: Obj) -> Obj:
    if obj["kind"] == "Pod":
        spec: Obj = obj["spec"]
        return spec
    template: Obj = obj["spec"]["template"]["spec"]
    return template


def pods(objects: Iterable[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(object, pod spec) of every object that runs pods."""
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            yield obj, pod_spec(obj)


def containers(spec: Obj) -> list[Obj]:
    """Init containers and containers."""
    return [*spec.get("initContainers", []), *spec["containers"]]


def security_problems(obj: Obj) -> list[str]:
    """What in this pod's spec breaks the "restricted" Pod Security Standard or lets a
    container write outside its mounted volumes."""
    spec = pod_spec(obj)
    name = f"{obj['kind']} {obj['metadata']['name']}"
    pod_ctx = spec.get("securityContext", {})
    problems = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"{name}: {key}")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= {"emptyDir", "configMap", "secret", "persistentVolumeClaim"}:
            problems.append(f"{name}: volume {volume['name']} of kind {kinds}")
    for container in containers(spec):
        where = f"{name} container {container['name']}"
        ctx = {**pod_ctx, **container.get("securityContext", {})}
        if ctx.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if ctx.get("runAsUser", 1) == 0 or ctx.get("runAsGroup", 1) == 0:
            problems.append(f"{where}: runs as uid or gid 0")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problems.append(f"{where}: privileged")
        if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: does not drop ALL capabilities")
        if ctx.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        if ctx.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
    return problems


def env_of(container: Obj) -> dict[str, Any]:
    """Name -> value (or valueFrom) of a container's env entries."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def writable_mounts(spec: Obj, container: Obj) -> dict[str, str]:
    """Mount path -> volume kind of the container's writable mounts."""
    kinds = {v["name"]: (set(v) - {"name"}).pop() for v in spec.get("volumes", [])}
    return {
        m["mountPath"]: kinds[m["name"]]
        for m in container.get("volumeMounts", [])
        if not m.get("readOnly")
    }


def named_port(container: Obj, port: int | str) -> int:
    """The container port a probe's ``port`` designates (a number or a port name)."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)
