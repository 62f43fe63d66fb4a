"""The Helm chart, rendered offline (helm-python-sdk bundles Helm itself) under every value
set in helm/lg-deploy/ci/: lint, values schema, strict validation of every object, and the
properties the fleet depends on (scaling, drain, probes, security, secrets, migrations)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python import Chart, HelmRenderError, HelmValuesError, lint

from tests.kube import (
    KUBERNETES_VERSIONS,
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
CHART = ROOT / "helm" / "lg-deploy"
VALUE_SETS = {
    path.name.removesuffix("-values.yaml"): path for path in (CHART / "ci").glob("*.yaml")
}
RELEASE, NAMESPACE = "demo", "apps"
FULLNAME = f"{RELEASE}-lg-deploy"
DEFAULTS = {
    "database": {"url": "postgresql+asyncpg://lgd:pw@db.example.internal:5432/lgd"},
    "queue": {"url": "redis://redis.example.internal:6379/0"},
}


def values_of(value_set: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUE_SETS[value_set].read_text())
    return loaded


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


class Rendered:
    """The chart's objects for one set of values, and NOTES.txt."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = manifests.pop(f"{CHART.name}/templates/NOTES.txt", "")
        self.objects = [obj for text in manifests.values() for obj in load_all(text)]

    def all(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert found, f"no {kind} {name} among {[o['metadata']['name'] for o in self.all(kind)]}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(obj["metadata"]["name"] == name for obj in self.all(kind))

    def container(self, deployment: str, name: str) -> Obj:
        spec = pod_spec(self.get("Deployment", deployment))
        (found,) = [c for c in containers(spec) if c["name"] == name]
        return found

    @property
    def api(self) -> Obj:
        return self.get("Deployment", f"{FULLNAME}-api")

    @property
    def worker(self) -> Obj:
        return self.get("Deployment", f"{FULLNAME}-worker")


def render(chart: Chart, values: dict[str, Any]) -> Rendered:
    return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="module")
def rendered(chart: Chart) -> dict[str, Rendered]:
    return {name: render(chart, values_of(name)) for name in VALUE_SETS}


# The value sets ----------------------------------------------------------------------------


def test_value_sets_cover_the_deployments_users_run() -> None:
    """ci/ keeps a value set for each way of deploying that the chart supports."""
    assert set(VALUE_SETS) >= {
        "default",
        "hpa",
        "keda",
        "keda-prometheus",
        "existing-secrets",
        "bundled-backends",
        "ingress",
        "configmap-graphs",
    }


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_is_clean(value_set: str) -> None:
    """helm lint --strict finds nothing above "info" on either supported Kubernetes."""
    for version in KUBERNETES_VERSIONS:
        report = lint(CHART, values_of(value_set), strict=True, kube_version=f"v{version}")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_value_sets_pass_the_values_schema(chart: Chart, value_set: str) -> None:
    """Every value set is one values.schema.json accepts."""
    chart.validate_schema(values_of(value_set))


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_validates_strictly(rendered: dict[str, Rendered], value_set: str) -> None:
    """Every rendered object is valid for its schema with unknown fields refused: built-in
    kinds on the oldest and newest supported Kubernetes, ScaledObject on KEDA's CRD."""
    objects = rendered[value_set].objects
    assert objects
    errors = [error for obj in objects for error in validation_errors(obj)]
    assert errors == []


def test_values_schema_refuses_typos_and_wrong_types(chart: Chart) -> None:
    """A misspelled key or a wrong type stops the install with the path of the mistake."""
    mistakes: list[tuple[dict[str, Any], str]] = [
        ({"worker": {"concurency": 5}}, "concurency"),
        ({"databse": {"url": "postgresql+asyncpg://x"}}, "databse"),
        ({"api": {"image": {"tag": 1.5}}}, "/api/image/tag"),
        ({"worker": {"replicas": "3"}}, "/worker/replicas"),
        ({"worker": {"autoscaling": {"trigger": "redis"}}}, "/worker/autoscaling/trigger"),
        ({"env": {"LG_DEPLOY_DRAIN_S": "5"}}, "LG_DEPLOY_DRAIN_S"),
    ]
    for values, where in mistakes:
        with pytest.raises(HelmValuesError, match=re.escape(where)):
            chart.validate_schema(values)
        with pytest.raises(HelmValuesError):
            chart.render(merged(DEFAULTS, values), name=RELEASE, namespace=NAMESPACE)


def test_missing_backends_fail_with_what_to_set(chart: Chart) -> None:
    """Without a database the chart does not render, and says which values to set."""
    with pytest.raises(HelmRenderError, match=re.escape("set database.url")):
        chart.render({}, name=RELEASE, namespace=NAMESPACE)
    with pytest.raises(HelmRenderError, match=re.escape("set queue.url")):
        chart.render({"database": DEFAULTS["database"]}, name=RELEASE, namespace=NAMESPACE)


# Scaling ------------------------------------------------------------------------------------


def test_worker_count_is_left_to_kubectl_scale_by_default(rendered: dict[str, Rendered]) -> None:
    """With no worker.replicas the Deployment has no replicas field, so a `kubectl scale`
    survives `helm upgrade`; NOTES.txt says how to scale."""
    default = rendered["default"]
    assert "replicas" not in default.worker["spec"]
    assert f"scale deployment/{FULLNAME}-worker --replicas=N" in default.notes


def test_worker_count_is_left_to_keda_when_it_scales(rendered: dict[str, Rendered]) -> None:
    """With KEDA on, the Deployment has no replicas field whatever worker.replicas says."""
    for value_set in ("keda", "keda-prometheus", "existing-secrets"):
        assert "replicas" not in rendered[value_set].worker["spec"]


def test_worker_count_is_the_charts_when_set(chart: Chart, rendered: dict[str, Rendered]) -> None:
    """worker.replicas set to a number is rendered, 0 included."""
    assert rendered["hpa"].worker["spec"]["replicas"] == 3
    zero = render(chart, merged(DEFAULTS, {"worker": {"replicas": 0}}))
    assert zero.worker["spec"]["replicas"] == 0


def test_api_count_is_left_to_its_hpa(rendered: dict[str, Rendered]) -> None:
    """With the API's HPA on, the API Deployment has no replicas field and the HPA targets it."""
    hpa_set = rendered["hpa"]
    assert "replicas" not in hpa_set.api["spec"]
    hpa = hpa_set.get("HorizontalPodAutoscaler", f"{FULLNAME}-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == hpa_set.api["metadata"]["name"]
    assert rendered["default"].api["spec"]["replicas"] == 2


def test_keda_scales_workers_on_the_runnable_backlog(rendered: dict[str, Rendered]) -> None:
    """The ScaledObject targets the worker Deployment, counts RUNNING plus runnable QUEUED
    executions in the store, one worker per worker.concurrency of them, down to zero."""
    keda = rendered["keda"]
    scaled = keda.get("ScaledObject", f"{FULLNAME}-worker")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == keda.worker["metadata"]["name"]
    assert spec["minReplicaCount"] == 0
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    query = trigger["metadata"]["query"]
    for part in ("FROM executions", "'RUNNING'", "'QUEUED'", "not_before <= now()"):
        assert part in query
    concurrency = env_of(keda.container(f"{FULLNAME}-worker", "worker"))
    assert trigger["metadata"]["targetQueryValue"] == concurrency["LG_DEPLOY_WORKER_CONCURRENCY"]
    assert trigger["metadata"]["activationTargetQueryValue"] == "0"


def test_keda_reads_a_libpq_url_from_a_secret(rendered: dict[str, Rendered]) -> None:
    """The trigger authenticates through a TriggerAuthentication whose Secret key exists:
    derived from database.url in the chart's Secret, or the user's own Secret."""
    keda = rendered["keda"]
    (trigger,) = keda.get("ScaledObject", f"{FULLNAME}-worker")["spec"]["triggers"]
    auth = keda.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "connection"
    secret = keda.get("Secret", ref["name"])["stringData"]
    assert secret[ref["key"]] == secret["database-url"].replace(
        "postgresql+asyncpg://", "postgresql://"
    )
    assert trigger["metadata"]["host"] == "postgres.example.internal"
    assert trigger["metadata"]["dbName"] == "lg-deploy"

    own = rendered["existing-secrets"]
    (trigger,) = own.get("ScaledObject", f"{FULLNAME}-worker")["spec"]["triggers"]
    auth = own.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "lg-deploy-db", "key": "libpq-url"}
    ]


def test_keda_prometheus_trigger_uses_the_query_value(rendered: dict[str, Rendered]) -> None:
    """The Prometheus trigger sends the configured query to the configured server."""
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    (trigger,) = rendered["keda-prometheus"].get("ScaledObject", f"{FULLNAME}-worker")["spec"][
        "triggers"
    ]
    assert trigger["type"] == "prometheus"
    assert (
        trigger["metadata"]["query"] == chart_values["worker"]["autoscaling"]["prometheus"]["query"]
    )
    assert trigger["metadata"]["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert trigger["metadata"]["threshold"] == "10"


@pytest.mark.parametrize("drain", [0, 20, 45, 600])
def test_grace_period_outlasts_the_drain(chart: Chart, drain: int) -> None:
    """terminationGracePeriodSeconds comes from the same value as LG_DEPLOY_DRAIN_S, with
    room left after the drain to hand executions back before the kubelet's SIGKILL."""
    out = render(chart, merged(DEFAULTS, {"worker": {"drainSeconds": drain}}))
    worker_env = env_of(out.container(f"{FULLNAME}-worker", "worker"))
    assert worker_env["LG_DEPLOY_DRAIN_S"] == str(drain)
    grace = pod_spec(out.worker)["terminationGracePeriodSeconds"]
    assert grace == drain + 15
    assert grace > float(worker_env["LG_DEPLOY_DRAIN_S"])


def test_scale_in_gives_running_work_its_drain(rendered: dict[str, Rendered]) -> None:
    """Under KEDA a removed worker gets SIGTERM (exec-form entrypoint), drains for
    drainSeconds within its grace period, and scale-down waits out a stabilization window."""
    keda = rendered["keda"]
    worker = keda.container(f"{FULLNAME}-worker", "worker")
    assert worker["args"] == ["worker"] and "command" not in worker
    assert "lifecycle" not in worker, "a preStop hook would delay the SIGTERM that starts the drain"
    assert pod_spec(keda.worker)["terminationGracePeriodSeconds"] == 45 + 15
    scaled = keda.get("ScaledObject", f"{FULLNAME}-worker")["spec"]
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert keda.get("PodDisruptionBudget", f"{FULLNAME}-worker")["spec"]["maxUnavailable"] == 1


# Probes, ports, security ----------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_probes_hit_the_endpoints_the_app_serves(
    rendered: dict[str, Rendered], value_set: str
) -> None:
    """API: /healthz for start-up and liveness, /readyz for readiness, on the port it listens
    on; worker: /healthz on the metrics port it is told to serve on all interfaces."""
    out = rendered[value_set]
    api = out.container(f"{FULLNAME}-api", "api")
    api_env = env_of(api)
    assert api_env["LG_DEPLOY_HOST"] == "0.0.0.0"
    api_port = int(api_env["LG_DEPLOY_PORT"])
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):  # fmt: skip
        assert api[probe]["httpGet"]["path"] == path
        assert named_port(api, api[probe]["httpGet"]["port"]) == api_port
    assert api["readinessProbe"]["timeoutSeconds"] > 2 * 2, "/readyz waits 2 s per backend"

    worker = out.container(f"{FULLNAME}-worker", "worker")
    worker_env = env_of(worker)
    assert worker_env["LG_DEPLOY_METRICS_ADDR"] == "0.0.0.0"
    metrics_port = int(worker_env["LG_DEPLOY_METRICS_PORT"])
    assert metrics_port > 0
    for probe in ("startupProbe", "livenessProbe"):
        assert worker[probe]["httpGet"]["path"] == "/healthz"
        assert named_port(worker, worker[probe]["httpGet"]["port"]) == metrics_port
    assert "readinessProbe" not in worker, "workers take no traffic"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_nothing_runs_as_root_or_writes_its_image(
    rendered: dict[str, Rendered], value_set: str
) -> None:
    """Every pod meets the "restricted" Pod Security Standard with a read-only root
    filesystem; lg-deploy containers can write /tmp and HOME only, both emptyDir."""
    objects = rendered[value_set].objects
    assert [problem for obj, _ in pods(objects) for problem in security_problems(obj)] == []
    for _, spec in pods(objects):
        for container in containers(spec):
            if container["name"] in ("api", "worker", "migrate"):
                home = env_of(container)["HOME"]
                expected = {"/tmp": "emptyDir", home: "emptyDir"}
                assert writable_mounts(spec, container) == expected, container["name"]


def test_image_tags_come_from_values(chart: Chart, rendered: dict[str, Rendered]) -> None:
    """Every lg-deploy container runs the repository, tag and digest the values name; the
    tag defaults to the chart's appVersion."""
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    default = rendered["default"]
    assert default.container(f"{FULLNAME}-api", "api")["image"] == f"lg-deploy-api:{app_version}"
    assert (
        default.container(f"{FULLNAME}-worker", "worker")["image"]
        == f"lg-deploy-worker:{app_version}"
    )

    digest = "sha256:" + "ab" * 32
    out = render(
        chart,
        merged(
            values_of("bundled-backends"),
            {
                "api": {"image": {"repository": "reg.example/team/api", "tag": "7.1.0"}},
                "worker": {
                    "image": {"repository": "reg.example/team/w", "tag": "7.1.0", "digest": digest}
                },
            },
        ),
    )
    api_image, worker_image = "reg.example/team/api:7.1.0", f"reg.example/team/w:7.1.0@{digest}"
    for _, spec in pods(out.objects):
        for container in containers(spec):
            if container["name"] in ("postgresql", "redis"):
                continue
            # The migration, in its Job or an init container, and the test pod use the API image.
            expected = worker_image if container["name"] == "worker" else api_image
            assert container["image"] == expected, container["name"]


# Secrets and migrations -----------------------------------------------------------------------


def test_chart_secret_holds_the_urls_and_keys(rendered: dict[str, Rendered]) -> None:
    """Given URLs and keys, the chart keeps them in its Secret and the pods read them there."""
    out = rendered["bundled-backends"]
    secret = out.get("Secret", FULLNAME)["stringData"]
    assert secret["api-keys"] == "trial-key-1,trial-key-2"
    api_env = env_of(out.container(f"{FULLNAME}-api", "api"))
    for variable, key in (("LG_DEPLOY_DATABASE_URL", "database-url"),
                          ("LG_DEPLOY_QUEUE_URL", "queue-url"),
                          ("LG_DEPLOY_API_KEYS", "api-keys")):  # fmt: skip
        assert api_env[variable] == {"secretKeyRef": {"name": FULLNAME, "key": key}}


def test_existing_secrets_are_referenced_not_copied(rendered: dict[str, Rendered]) -> None:
    """With existing Secrets the chart renders no Secret of its own and no secret value."""
    out = rendered["existing-secrets"]
    assert out.all("Secret") == []
    for deployment, name in ((f"{FULLNAME}-api", "api"), (f"{FULLNAME}-worker", "worker")):
        env = env_of(out.container(deployment, name))
        assert env["LG_DEPLOY_DATABASE_URL"] == {
            "secretKeyRef": {"name": "lg-deploy-db", "key": "url"}
        }
        assert env["LG_DEPLOY_QUEUE_URL"] == {
            "secretKeyRef": {"name": "lg-deploy-queue", "key": "url"}
        }
    api_env = env_of(out.container(f"{FULLNAME}-api", "api"))
    assert api_env["LG_DEPLOY_API_KEYS"] == {
        "secretKeyRef": {"name": "lg-deploy-api-keys", "key": "keys"}
    }
    job = out.get("Job", f"{FULLNAME}-migrate")
    (migrate,) = pod_spec(job)["containers"]
    assert env_of(migrate)["LG_DEPLOY_DATABASE_URL"] == {
        "secretKeyRef": {"name": "lg-deploy-db", "key": "url"}
    }


def test_migrations_run_as_a_hook_before_install_and_upgrade(rendered: dict[str, Rendered]) -> None:
    """The migration Job is a pre-install/pre-upgrade hook running `lg-deploy migrate`; the
    Secret it reads is a hook created before it (lower weight), since the release's own
    objects, its ServiceAccount included, do not exist yet at pre-install."""
    out = rendered["default"]
    job = out.get("Job", f"{FULLNAME}-migrate")
    hooks = job["metadata"]["annotations"]
    assert set(hooks["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    spec = pod_spec(job)
    (migrate,) = spec["containers"]
    assert migrate["args"] == ["migrate"]
    assert "serviceAccountName" not in spec
    ref = env_of(migrate)["LG_DEPLOY_DATABASE_URL"]["secretKeyRef"]
    secret = out.get("Secret", ref["name"])
    secret_hooks = secret["metadata"]["annotations"]
    assert secret_hooks["helm.sh/hook"] == hooks["helm.sh/hook"]
    assert int(secret_hooks["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    assert (
        secret["stringData"][ref["key"]]
        == out.get("Secret", FULLNAME)["stringData"]["database-url"]
    )
    for deployment in (out.api, out.worker):
        assert "initContainers" not in pod_spec(deployment)


def test_bundled_postgresql_migrates_from_init_containers(rendered: dict[str, Rendered]) -> None:
    """With the bundled PostgreSQL (created after pre-install hooks run) no hook Job is
    rendered: every API and worker pod runs `lg-deploy migrate` first."""
    out = rendered["bundled-backends"]
    assert out.all("Job") == []
    for deployment in (out.api, out.worker):
        (init,) = pod_spec(deployment)["initContainers"]
        assert init["args"] == ["migrate"]
    secret = out.get("Secret", FULLNAME)["stringData"]
    host = f"{FULLNAME}-postgresql.{NAMESPACE}.svc"
    assert (
        secret["database-url"] == f"postgresql+asyncpg://lg-deploy:trial-only@{host}:5432/lg-deploy"
    )
    assert secret["queue-url"] == f"redis://{FULLNAME}-redis.{NAMESPACE}.svc:6379/0"
    for backend in ("postgresql", "redis"):
        assert out.has("Service", f"{FULLNAME}-{backend}")
        assert out.has("StatefulSet", f"{FULLNAME}-{backend}")
    assert "WARNING" in out.notes


# Graphs, monitoring, ingress, helm test --------------------------------------------------------


def test_graphs_from_a_configmap(rendered: dict[str, Rendered]) -> None:
    """graphs.files becomes a ConfigMap mounted read-only in the API and the workers, and
    LG_DEPLOY_CONFIG points at its langgraph.json; the value set ships the example as is."""
    example = ROOT / "examples" / "k8s-configmap-graphs"
    files = {
        path.name: path.read_text() for path in example.iterdir() if path.suffix in (".json", ".py")
    }
    assert values_of("configmap-graphs")["graphs"]["files"] == files

    out = rendered["configmap-graphs"]
    configmap = out.get("ConfigMap", f"{FULLNAME}-graphs")
    assert configmap["data"] == files
    for deployment, name in ((f"{FULLNAME}-api", "api"), (f"{FULLNAME}-worker", "worker")):
        container = out.container(deployment, name)
        assert env_of(container)["LG_DEPLOY_CONFIG"] == "/etc/lg-deploy/graphs/langgraph.json"
        spec = pod_spec(out.get("Deployment", deployment))
        (volume,) = [v for v in spec["volumes"] if v.get("configMap")]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert mount == {
            "name": volume["name"],
            "mountPath": "/etc/lg-deploy/graphs",
            "readOnly": True,
        }
        annotations = out.get("Deployment", deployment)["spec"]["template"]["metadata"][
            "annotations"
        ]
        assert "checksum/graphs" in annotations


def test_alert_rules_ship_verbatim(rendered: dict[str, Rendered]) -> None:
    """The PrometheusRule's spec is the rules file's content, its Prometheus templates
    ({{ $labels.x }}, {{ $value }}) untouched by Helm."""
    path = CHART / "files" / "prometheus" / "lg-deploy-rules.yaml"
    rule = rendered["ingress"].get("PrometheusRule", FULLNAME)
    assert rule["spec"] == yaml.safe_load(path.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    templates = set(re.findall(r"\{\{.*?\}\}", path.read_text()))
    assert templates  # the rules do use Prometheus templates
    annotations = "\n".join(
        text
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        for text in r.get("annotations", {}).values()
    )
    assert all(template in annotations for template in templates)


def test_alert_rules_survive_prometheus_templates(tmp_path: Path) -> None:
    """A rules file full of Prometheus templates renders to exactly its own content."""
    with Chart.load(CHART) as original:
        copy = Path(original.save_dir(tmp_path))
    rules = {
        "groups": [
            {
                "name": "t",
                "rules": [
                    {
                        "alert": "A",
                        "expr": 'x{job="a"} > 0',
                        "annotations": {
                            "summary": "{{ $labels.instance }}: {{ $value | humanize }}",
                            "description": "{{ .Labels.job }} {{ $externalLabels.cluster }}",
                            "runbook": '{{ template "x" . }} {{- range $i := .x }}{{ end }}',
                        },
                    }
                ],
            }
        ]
    }
    (copy / "files" / "prometheus" / "lg-deploy-rules.yaml").write_text(yaml.safe_dump(rules))
    with Chart.load(copy) as edited:
        out = render(edited, merged(DEFAULTS, {"metrics": {"prometheusRule": {"enabled": True}}}))
    assert out.get("PrometheusRule", FULLNAME)["spec"] == rules


def test_dashboard_ships_verbatim_for_the_grafana_sidecar(rendered: dict[str, Rendered]) -> None:
    """The dashboard ConfigMap carries the JSON file byte for byte, with the sidecar label."""
    path = CHART / "files" / "dashboards" / "lg-deploy.json"
    configmap = rendered["ingress"].get("ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["data"] == {"lg-deploy.json": path.read_text()}
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "lg-deploy"}
    json.loads(configmap["data"]["lg-deploy.json"])


def test_servicemonitors_find_the_metrics(rendered: dict[str, Rendered]) -> None:
    """Each ServiceMonitor carries the configured labels and selects a Service whose named
    port leads to the container port serving /metrics (the API's, the workers')."""
    out = rendered["ingress"]
    monitors = out.all("ServiceMonitor")
    assert len(monitors) == 2
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in out.all("Service")
            if selector.items() <= s["metadata"].get("labels", {}).items()
            and s["spec"]["selector"].items() <= selector.items()
        ]  # fmt: skip
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        deployment = out.get("Deployment", service["metadata"]["name"].removesuffix("-metrics"))
        (container,) = pod_spec(deployment)["containers"]
        assert named_port(container, port["targetPort"]) in (8000, 9090)


def test_ingress_routes_to_the_api_service(rendered: dict[str, Rendered]) -> None:
    """The Ingress sends its hosts to the API Service's http port, with TLS as configured."""
    out = rendered["ingress"]
    ingress = out.get("Ingress", f"{FULLNAME}-api")
    service = out.get("Service", f"{FULLNAME}-api")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "lg-deploy.team-a.example.com"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "http"},
    }
    assert ingress["spec"]["tls"][0]["secretName"] == "lg-deploy-tls"
    assert "https://lg-deploy.team-a.example.com/docs" in out.notes


def test_helm_test_pod_calls_readyz(rendered: dict[str, Rendered]) -> None:
    """`helm test` runs a pod, from the API image, that fails unless the API Service answers
    /readyz with a success."""
    out = rendered["default"]
    (pod,) = out.all("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    url = container["command"][-1]
    service = out.get("Service", f"{FULLNAME}-api")
    assert (
        url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz"
    )
    assert container["image"] == out.container(f"{FULLNAME}-api", "api")["image"]
    assert pod["spec"]["restartPolicy"] == "Never"
