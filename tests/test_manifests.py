"""k8s/ (plain manifests, rendered by `kubectl kustomize`) and skaffold.yaml: they render,
validate strictly, and keep the properties the chart has."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from helm_python import Chart

from tests.kube import (
    Obj,
    containers,
    env_of,
    load_all,
    named_port,
    pod_spec,
    pods,
    security_problems,
    validation_errors,
    writable_mounts,
)

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZATIONS = {"base": ROOT / "k8s" / "base", "example": ROOT / "k8s" / "overlays" / "example"}
SCHEMAS = Path(__file__).resolve().parent / "schemas"


@cache
def kustomize(name: str) -> tuple[Obj, ...]:
    """The objects `kubectl kustomize` builds from one kustomization."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not installed: the k8s/ tests render with `kubectl kustomize` "
            "(kubectl 1.27 or later; Debian's kubernetes-client 1.20 is too old)",
            pytrace=False,
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(load_all(result.stdout))


def find(objects: tuple[Obj, ...], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(objects: tuple[Obj, ...], deployment: str, name: str) -> Obj:
    (found,) = [
        c
        for c in containers(pod_spec(find(objects, "Deployment", deployment)))
        if c["name"] == name
    ]
    return found


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_kustomize_renders_objects_that_validate_strictly(name: str) -> None:
    """Every object of the base and of the example overlay is valid, unknown fields refused,
    on the oldest and newest supported Kubernetes."""
    objects = kustomize(name)
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap"}
    assert [error for obj in objects for error in validation_errors(obj)] == []


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_manifest_pods_are_restricted_and_read_only(name: str) -> None:
    """Every pod meets the "restricted" Pod Security Standard, and lg-deploy's containers
    write only to their /tmp and HOME emptyDirs."""
    objects = kustomize(name)
    assert [problem for obj, _ in pods(objects) for problem in security_problems(obj)] == []
    for _, spec in pods(objects):
        for each in containers(spec):
            assert writable_mounts(spec, each) == {
                "/tmp": "emptyDir",
                "/home/lg-deploy": "emptyDir",
            }


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_manifest_workers_scale_by_hand_and_drain(name: str) -> None:
    """The worker Deployment has no replicas field (kubectl scale is never undone by the next
    apply), its grace period outlasts LG_DEPLOY_DRAIN_S, and both kinds of pod migrate first."""
    objects = kustomize(name)
    worker = find(objects, "Deployment", "lg-deploy-worker")
    assert "replicas" not in worker["spec"]
    drain = float(env_of(container(objects, "lg-deploy-worker", "worker"))["LG_DEPLOY_DRAIN_S"])
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= drain + 10
    for deployment in ("lg-deploy-api", "lg-deploy-worker"):
        (init,) = pod_spec(find(objects, "Deployment", deployment))["initContainers"]
        assert init["args"] == ["migrate"]


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_manifest_probes_hit_the_endpoints_the_app_serves(name: str) -> None:
    """The same probes as the chart's: API /healthz and /readyz on its port, worker /healthz
    on its metrics port."""
    objects = kustomize(name)
    api = container(objects, "lg-deploy-api", "api")
    assert api["args"] == ["api"]
    api_port = int(env_of(api)["LG_DEPLOY_PORT"])
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert api[probe]["httpGet"]["path"] == path
        assert named_port(api, api[probe]["httpGet"]["port"]) == api_port
    worker = container(objects, "lg-deploy-worker", "worker")
    assert worker["args"] == ["worker"]
    env = env_of(worker)
    assert env["LG_DEPLOY_METRICS_ADDR"] == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["httpGet"]["path"] == "/healthz"
        port = named_port(worker, worker[probe]["httpGet"]["port"])
        assert port == int(env["LG_DEPLOY_METRICS_PORT"])


def test_example_overlay_runs_its_own_image_in_its_namespace() -> None:
    """The overlay swaps in the derived image for every container, puts everything in its
    namespace under the restricted Pod Security Standard, and merges its settings in."""
    objects = kustomize("example")
    namespace = find(objects, "Namespace", "team-a")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "team-a", obj["metadata"]["name"]
    images = {c["image"] for _, spec in pods(objects) for c in containers(spec)}
    assert images == {"registry.example.com/team-a/graphs:1.0.0"}
    (settings,) = [o for o in objects if o["kind"] == "ConfigMap"]
    assert settings["data"]["LG_DEPLOY_QUEUE_NAME"] == "team-a:queue"
    assert settings["data"]["LG_DEPLOY_LOG_FORMAT"] == "json"
    worker = container(objects, "lg-deploy-worker", "worker")
    assert env_of(worker)["LG_DEPLOY_WORKER_CONCURRENCY"] == "4"
    assert find(objects, "Deployment", "lg-deploy-api")["spec"]["replicas"] == 3


# skaffold ------------------------------------------------------------------------------------


def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    return config


def test_skaffold_config_matches_its_schema() -> None:
    """skaffold.yaml is a valid skaffold/v4beta14 config, and the schema would catch a typo."""
    schema = json.loads((SCHEMAS / "skaffold-v4beta14.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14"
    assert [error.message for error in validator.iter_errors(config)] == []
    config["deploy"]["helm"]["releases"][0]["chartpath"] = "helm/lg-deploy"
    assert not validator.is_valid(config)


def test_skaffold_builds_both_images_from_their_dockerfiles() -> None:
    """Both images are artifacts built from Dockerfile.api and Dockerfile.worker."""
    artifacts = {a["image"]: a for a in skaffold()["build"]["artifacts"]}
    assert set(artifacts) == {"lg-deploy-api", "lg-deploy-worker"}
    for image, artifact in artifacts.items():
        dockerfile = artifact["docker"]["dockerfile"]
        assert dockerfile == f"Dockerfile.{image.removeprefix('lg-deploy-')}"
        assert (ROOT / artifact.get("context", ".") / dockerfile).is_file()


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON patches of a skaffold profile applied (the add and remove ops it uses)."""
    config = json.loads(json.dumps(config))
    for patch in patches:
        *parents, last = [
            part.replace("~1", "/").replace("~0", "~") for part in patch["path"].split("/")[1:]
        ]
        node: Any = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if patch["op"] == "remove":
            del node[last]
        else:
            assert patch["op"] == "add", patch
            node[last] = patch["value"]
    return config


def helm_values(release: dict[str, Any], templates: dict[str, str]) -> dict[str, Any]:
    """The values `helm --set` makes of a release's setValues and setValueTemplates, the
    templates filled in with ``templates``."""
    pairs = dict(release.get("setValues", {}))
    for key, template in release.get("setValueTemplates", {}).items():
        pairs[key] = templates[template.strip("{}").lstrip(".")]
    values: dict[str, Any] = {}
    for key, value in pairs.items():
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return values


@pytest.mark.parametrize("profile", [None, "dev"])
def test_skaffold_deploys_the_chart_with_values_it_accepts(profile: str | None) -> None:
    """The release deploys helm/lg-deploy with the images skaffold built, and the values it
    sets (with or without the dev profile) pass the chart's schema and render."""
    config = skaffold()
    if profile is not None:
        (found,) = [p for p in config["profiles"] if p["name"] == profile]
        config = apply_patches(config, found["patches"])
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    filled = {
        "IMAGE_REPO_lg_deploy_api": "reg.example/lg-deploy-api",
        "IMAGE_TAG_lg_deploy_api": "abc123",
        "IMAGE_DIGEST_lg_deploy_api": "",
        "IMAGE_REPO_lg_deploy_worker": "reg.example/lg-deploy-worker",
        "IMAGE_TAG_lg_deploy_worker": "abc123",
        "IMAGE_DIGEST_lg_deploy_worker": "sha256:" + "0" * 64,
        "LG_DEPLOY_DATABASE_URL": "postgresql+asyncpg://u:p@db.example:5432/d",
        "LG_DEPLOY_QUEUE_URL": "redis://redis.example:6379/0",
    }
    values = helm_values(release, filled)
    with Chart.load(ROOT / release["chartPath"]) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=release["name"], namespace=release["namespace"])
    objects = [
        obj for path, text in manifests.items() if path.endswith(".yaml") for obj in load_all(text)
    ]
    api = find(tuple(objects), "Deployment", f"{release['name']}-api")
    assert pod_spec(api)["containers"][0]["image"] == "reg.example/lg-deploy-api:abc123"
    forwarded = config["portForward"][0]
    assert (
        find(tuple(objects), "Service", forwarded["resourceName"])["spec"]["ports"][0]["port"]
        == (forwarded["port"])
    )
