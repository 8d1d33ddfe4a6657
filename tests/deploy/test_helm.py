"""The Helm chart: lint, strict schema validation of every rendering, values schema, security."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from motionguard_dev.kafka_local import LocalKafka, LocalKafkaConfig
from streamer.settings import PREFIX, WorkerSettings, review_settings_from_env, settings_from_env
from tests.deploy.conftest import CHART, KUBERNETES_VERSIONS, RULES, run_tool

CI_DIR = CHART / "ci"
CI_VALUES = sorted(CI_DIR.glob("*.yaml"))
#: None = the chart's defaults.
VALUES_FILES: list[Path | None] = [None, *CI_VALUES]
LATEST_KUBERNETES = KUBERNETES_VERSIONS[-1]
RELEASE = "mg"

#: Worker settings the chart sets itself (from dedicated values); the rest go through `settings`.
CHART_MANAGED_SETTINGS = {
    "broker", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile", "app_id",
    "sasl_password_file", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname",  # kafka.* values and Secrets
    "topic_uploads", "topic_verdicts", "topic_dead_letters", "topic_labels", "topic_partitions",
    "topic_replication_factor", "topic_min_insync_replicas", "data_dir", "bundle", "device", "download_dir",
    "web_host", "web_port",
    "worker_name",  # the pod name (HOSTNAME)
    "trust_anchors", "trust_allowed_list",  # files mounted from provenance.trust
}  # fmt: skip
#: Values that are free-form Kubernetes objects, validated in the rendered manifests instead.
FREE_FORM_VALUES = {"global", "affinity", "topologySpreadConstraints", "extraEnv.valueFrom"}


def values_id(path: Path | None) -> str:
    return "defaults" if path is None else path.name


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render_text(helm: str) -> Callable[..., str]:
    """``render_text(values_file, *set_args)`` -> the output of ``helm template`` (cached)."""
    cache: dict[tuple[Any, ...], str] = {}

    def _render(values: Path | None = None, *sets: str, kube_version: str = LATEST_KUBERNETES) -> str:
        key = (values, sets, kube_version)
        if key not in cache:
            args = [helm, "template", RELEASE, str(CHART), "--namespace", "moderation"]
            args += ["--kube-version", kube_version]
            if values is not None:
                args += ["--values", str(values)]
            for item in sets:
                args += ["--set", item]
            cache[key] = run_tool(args).stdout
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def render(render_text: Callable[..., str]) -> Render:
    """``render(values_file, *set_args)`` -> the manifests of ``helm template``."""

    def _render(values: Path | None = None, *sets: str, kube_version: str = LATEST_KUBERNETES) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(render_text(values, *sets, kube_version=kube_version)) if doc]

    return _render


def render_fails(helm: str, *args: str) -> str:
    """Run ``helm template`` with ``args``, which must fail; returns its error output."""
    command = [helm, "template", RELEASE, str(CHART), "--kube-version", LATEST_KUBERNETES, *args]
    result = run_tool(command, check=False)
    assert result.returncode != 0, f"{' '.join(command)} should have failed"
    return result.stderr


def component(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component", "worker"))


def only(manifests: list[dict[str, Any]], kind: str, of: str = "worker") -> dict[str, Any]:
    """The one manifest of ``kind`` belonging to ``of`` (the worker, or the review console)."""
    found = [m for m in manifests if m["kind"] == kind and component(m) == of]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kinds(manifests: list[dict[str, Any]]) -> set[str]:
    return {m["kind"] for m in manifests}


# --- lint and strict validation ---------------------------------------------------------------------


def test_ci_values_files_cover_every_optional_feature() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "gpu-values.yaml",
        "servicemonitor-values.yaml",
        "prometheusrule-values.yaml",
        "keda-values.yaml",
        "hpa-values.yaml",
        "external-secret-values.yaml",
        "mtls-values.yaml",
        "provenance-values.yaml",
        "review-values.yaml",
    }


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_helm_lint(helm: str, values: Path | None) -> None:
    args = [helm, "lint", "--strict", str(CHART), "--kube-version", LATEST_KUBERNETES]
    if values is not None:
        args += ["--values", str(values)]
    run_tool(args)


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_rendered_manifests_are_valid(
    render_text: Callable[..., str],
    kubeconform: str,
    schemas: Path,
    tmp_path: Path,
    values: Path | None,
    kube_version: str,
) -> None:
    # The raw output, not re-serialised: kubeconform -strict also rejects duplicate keys.
    rendered = render_text(values, kube_version=kube_version)
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered)
    kubernetes = "{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}"
    kubernetes += "/{{ .ResourceKind }}{{ .KindSuffix }}"
    crds = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}"
    # -strict: no unknown fields, no duplicate keys. Without -ignore-missing-schemas a kind with no
    # schema (e.g. a CRD we cannot get) is an error, never a silent skip.
    args = [kubeconform, "-strict", "-summary", "-output", "json", "-kubernetes-version", kube_version]
    args += ["-schema-location", f"{schemas}/kubernetes/{kubernetes}.json"]
    args += ["-schema-location", f"{schemas}/crds/{crds}.json", str(path)]
    result = run_tool(args, check=False)
    report = json.loads(result.stdout)
    problems = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert result.returncode == 0 and not problems, json.dumps(problems, indent=1) + result.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    summary = report["summary"]
    assert summary["valid"] == len(documents) > 0 and summary["skipped"] == 0


def test_each_optional_feature_renders_its_resources(render: Render) -> None:
    assert kinds(render()) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"}
    assert "ServiceMonitor" in kinds(render(CI_DIR / "servicemonitor-values.yaml"))
    assert "PrometheusRule" in kinds(render(CI_DIR / "prometheusrule-values.yaml"))
    assert "ScaledObject" in kinds(render(CI_DIR / "keda-values.yaml"))
    assert "HorizontalPodAutoscaler" in kinds(render(CI_DIR / "hpa-values.yaml"))
    assert {"ScaledObject", "TriggerAuthentication"} <= kinds(render(CI_DIR / "external-secret-values.yaml"))
    review = [m for m in render(CI_DIR / "review-values.yaml") if component(m) == "review"]
    assert sorted(m["kind"] for m in review) == ["ConfigMap", "Deployment", "Ingress", "Service"]


# --- the values schema and the template checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("set_arg", "complaint"),
    [
        ("replicaCont=2", "replicaCont"),
        ("serviceMonitor.enable=true", "enable"),
        ("kafka.topics.upload=x", "upload"),
        ("settings.batch_max_event=4", "batch_max_event"),
        ("settings.broker=kafka://x:9092", "broker"),  # chart-managed: use kafka.bootstrapServers
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("replicaCount=two", "replicaCount"),
        ("kafka.securityProtocol=SASL_SSL", "existingSecret"),
        ("model.bundle.source=pvc", "claimName"),
        ("settings.trust_anchors={/etc/a.pem}", "trust_anchors"),  # chart-managed: use provenance.trust
    ],
)
def test_values_schema_rejects_mistakes(helm: str, set_arg: str, complaint: str) -> None:
    error = render_fails(helm, "--set", set_arg)
    assert "schema" in error and complaint in error, error


def test_lint_rejects_a_misspelled_value(helm: str) -> None:
    result = run_tool([helm, "lint", str(CHART), "--set", "podDisruptionBudget.enabeld=false"], check=False)
    assert result.returncode != 0 and "enabeld" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "sets",
    [
        ("replicaCount=5",),
        ("autoscaling.hpa.enabled=true", "autoscaling.hpa.maxReplicas=5"),
        ("autoscaling.keda.enabled=true", "autoscaling.keda.maxReplicaCount=9", "kafka.uploadsPartitions=8"),
    ],
)
def test_replicas_above_the_partition_count_fail(helm: str, sets: tuple[str, ...]) -> None:
    args = [part for item in sets for part in ("--set", item)]
    error = render_fails(helm, *args)
    assert "must not exceed kafka.uploadsPartitions" in error, error


def test_topic_durability_values(helm: str, render: Render) -> None:
    """Three replicas and two in sync reach the worker; more in sync than replicas cannot render."""
    data = only(render(None, "kafka.replicationFactor=3", "kafka.minInsyncReplicas=2"), "ConfigMap")["data"]
    settings = settings_from_env({k: v for k, v in data.items() if k.startswith(PREFIX)})
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)
    error = render_fails(helm, "--set", "kafka.minInsyncReplicas=2")
    assert "must not exceed kafka.replicationFactor" in error, error


def test_replicas_equal_to_the_partition_count_render(render: Render) -> None:
    hpa = only(
        render(None, "autoscaling.hpa.enabled=true", "autoscaling.hpa.maxReplicas=4"),
        "HorizontalPodAutoscaler",
    )
    assert hpa["spec"]["maxReplicas"] == 4


def test_hpa_and_keda_are_exclusive(helm: str) -> None:
    error = render_fails(helm, "--set", "autoscaling.hpa.enabled=true", "--set", "autoscaling.keda.enabled=true")
    assert "autoscaling" in error


def walk_schema(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found += walk_schema(child, f"{path}.{key}".lstrip("."))
    items = node.get("items")
    if isinstance(items, dict):
        found += walk_schema(items, path)
    return found


def test_values_schema_is_closed_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, node in walk_schema(schema):
        if node.get("type") != "object" or path in FREE_FORM_VALUES:
            continue
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '<root>'} accepts unknown keys"
        else:  # a map: its values must at least be typed
            assert isinstance(node.get("additionalProperties"), dict), f"{path} is an untyped free-form object"


def test_settings_schema_matches_the_worker_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    passthrough = set(schema["properties"]["settings"]["properties"])
    worker = {f.name for f in fields(WorkerSettings)}
    assert passthrough | CHART_MANAGED_SETTINGS == worker, (
        "values.schema.json's settings and the chart-managed settings must together be exactly "
        f"streamer/settings.py's fields: missing {sorted(worker - passthrough - CHART_MANAGED_SETTINGS)}, "
        f"unknown {sorted((passthrough | CHART_MANAGED_SETTINGS) - worker)}"
    )
    assert not passthrough & CHART_MANAGED_SETTINGS


# --- what the rendered worker gets -------------------------------------------------------------------------


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return only(manifests, "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_security_defaults(render: Render, values: Path | None) -> None:
    manifests = render(values)
    spec = pod_spec(manifests)
    assert spec["automountServiceAccountToken"] is False
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"] + spec.get("initContainers", []):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["runAsNonRoot"] is True, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in security["capabilities"], container["name"]
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
    (worker,) = spec["containers"]
    tmp = [m for m in worker["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in spec["volumes"])
    service_account = [m for m in manifests if m["kind"] == "ServiceAccount"]
    assert all(sa["automountServiceAccountToken"] is False for sa in service_account)


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_worker_environment_is_accepted_by_the_worker(render: Render, values: Path | None) -> None:
    """The ConfigMap plus the Secret-backed variables make valid WorkerSettings (no unknown names)."""
    manifests = render(values)
    (worker,) = pod_spec(manifests)["containers"]
    env = dict(only(manifests, "ConfigMap")["data"])
    for variable in worker["env"]:
        if "valueFrom" in variable:
            assert "secretKeyRef" in variable["valueFrom"], variable["name"]
            env[variable["name"]] = "from-secret"
        else:
            env[variable["name"]] = variable["value"]
    assert [ref["configMapRef"]["name"] for ref in worker["envFrom"]] == [
        only(manifests, "ConfigMap")["metadata"]["name"]
    ]
    settings = settings_from_env(env)  # raises on an unknown MOTIONGUARD_* name or a bad value
    assert settings.web_port == worker["ports"][0]["containerPort"]
    assert settings.data_dir.startswith("/tmp/") and settings.download_dir.startswith("/tmp/")
    assert settings.app_id == "motionguard"
    assert worker["args"][-1] == "worker"


def test_probes_and_service(render: Render) -> None:
    manifests = render()
    (worker,) = pod_spec(manifests)["containers"]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/ready"
    port = worker["ports"][0]
    assert port == {"name": "http-metrics", "containerPort": 6066, "protocol": "TCP"}
    service = only(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert service["spec"]["selector"] == only(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = only(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert "resources" in worker and worker["resources"]["requests"]


def test_gpu_opt_in(render: Render) -> None:
    assert "nvidia.com/gpu" not in json.dumps(render())
    manifests = render(CI_DIR / "gpu-values.yaml")
    spec = pod_spec(manifests)
    (worker,) = spec["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["resources"]["limits"]["memory"] == "16Gi"
    assert worker["image"].endswith("-cuda")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    assert only(manifests, "ConfigMap")["data"]["MOTIONGUARD_DEVICE"] == "cuda"
    assert only(render(), "ConfigMap")["data"]["MOTIONGUARD_DEVICE"] == "cpu"
    capabilities = {env["name"]: env.get("value") for env in worker["env"]}["NVIDIA_DRIVER_CAPABILITIES"]
    assert "video" in capabilities.split(","), "NVDEC (settings.hw_decode: cuda) needs the video capability"
    assert only(manifests, "ConfigMap")["data"]["MOTIONGUARD_HW_DECODE"] == "cuda"


def test_kafka_credentials_come_from_the_existing_secret(render: Render) -> None:
    manifests = render(CI_DIR / "external-secret-values.yaml")
    spec = pod_spec(manifests)
    (worker,) = spec["containers"]
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"] for v in worker["env"] if "valueFrom" in v}
    # The password is a mounted file, never an environment variable (which `kubectl describe`,
    # /proc/<pid>/environ and crash reports show).
    assert refs == {"MOTIONGUARD_SASL_USERNAME": {"name": "motionguard-kafka", "key": "username"}}
    data = only(manifests, "ConfigMap")["data"]
    assert not any("SASL_USERNAME" in k or k == "MOTIONGUARD_SASL_PASSWORD" for k in data)
    assert data["MOTIONGUARD_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["MOTIONGUARD_SSL_CAFILE"] == "/etc/motionguard/kafka-ca/ca.crt"
    assert data["MOTIONGUARD_SASL_PASSWORD_FILE"] == "/etc/motionguard/kafka-sasl/password"
    assert data["MOTIONGUARD_SSL_CHECK_HOSTNAME"] == "true"
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts["kafka-sasl"] == "/etc/motionguard/kafka-sasl"
    sasl = [v for v in spec["volumes"] if v["name"] == "kafka-sasl"]
    assert sasl == [
        {
            "name": "kafka-sasl",
            "secret": {
                "secretName": "motionguard-kafka",
                "defaultMode": 0o440,
                "items": [{"key": "password", "path": "password"}],
            },
        }
    ]
    assert "Secret" not in kinds(manifests), "the chart must not create Kafka secrets"
    ca = [v for v in spec["volumes"] if v["name"] == "kafka-ca"]
    assert ca == [
        {
            "name": "kafka-ca",
            "secret": {"secretName": "kafka-cluster-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        }
    ]
    bundle = [v for v in spec["volumes"] if v["name"] == "model-bundle"]
    assert bundle[0]["persistentVolumeClaim"] == {"claimName": "motionguard-models", "readOnly": True}
    auth = only(manifests, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} == {
        ("username", "motionguard-kafka", "username"),
        ("password", "motionguard-kafka", "password"),
        ("ca", "kafka-cluster-ca", "ca.crt"),
    }


def test_mtls_client_certificate_and_ca_come_from_existing_secrets(render: Render) -> None:
    manifests = render(CI_DIR / "mtls-values.yaml")
    spec = pod_spec(manifests)
    (worker,) = spec["containers"]
    data = only(manifests, "ConfigMap")["data"]
    assert data["MOTIONGUARD_SECURITY_PROTOCOL"] == "SSL"
    assert data["MOTIONGUARD_SSL_CERTFILE"] == "/etc/motionguard/kafka-client/tls.crt"
    assert data["MOTIONGUARD_SSL_KEYFILE"] == "/etc/motionguard/kafka-client/tls.key"
    assert data["MOTIONGUARD_SSL_CAFILE"] == "/etc/motionguard/kafka-ca/ca.crt"
    assert not any("SASL" in k for k in data) and not any("valueFrom" in v for v in worker["env"])
    client = [v for v in spec["volumes"] if v["name"] == "kafka-client"]
    assert client == [
        {
            "name": "kafka-client",
            "secret": {
                "secretName": "motionguard-worker-tls",
                "defaultMode": 0o440,
                "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
            },
        }
    ]
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["kafka-client"] == {
        "name": "kafka-client",
        "mountPath": "/etc/motionguard/kafka-client",
        "readOnly": True,
    }
    auth = only(manifests, "TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} == {
        ("ca", "kafka-cluster-ca", "ca.crt"),
        ("cert", "motionguard-worker-tls", "tls.crt"),
        ("key", "motionguard-worker-tls", "tls.key"),
    }
    assert only(manifests, "ScaledObject")["spec"]["triggers"][0]["metadata"]["tls"] == "enable"


@pytest.mark.parametrize(("values", "mtls"), [("external-secret-values.yaml", False), ("mtls-values.yaml", True)])
def test_the_chart_sets_the_kafka_settings_the_secure_broker_tests_use(
    render: Render, values: str, mtls: bool, tmp_path: Path
) -> None:
    """tests/streamer/test_secure_kafka.py runs the worker with LocalKafka.client_env: the chart must set the same."""
    manifests = render(CI_DIR / values)
    (worker,) = pod_spec(manifests)["containers"]
    rendered = dict(only(manifests, "ConfigMap")["data"]) | {v["name"]: "from-secret" for v in worker["env"]}
    tested = LocalKafka(LocalKafkaConfig(data_dir=tmp_path, secure=True)).client_env("worker", mtls=mtls)
    assert set(tested) <= set(rendered)
    for name in ("MOTIONGUARD_SECURITY_PROTOCOL", "MOTIONGUARD_SASL_MECHANISM"):
        assert rendered.get(name) == tested.get(name), name
    assert rendered["MOTIONGUARD_SSL_CHECK_HOSTNAME"] == "true"  # as the tests run: verification on


def test_hostname_verification_can_be_turned_off_only_explicitly(render: Render) -> None:
    data = only(render(CI_DIR / "mtls-values.yaml", "kafka.sslCheckHostname=false"), "ConfigMap")["data"]
    assert data["MOTIONGUARD_SSL_CHECK_HOSTNAME"] == "false"
    assert "MOTIONGUARD_SSL_CHECK_HOSTNAME" not in only(render(), "ConfigMap")["data"]  # PLAINTEXT: no TLS


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (("kafka.clientCertSecret=worker-tls",), "kafka.clientCertSecret needs TLS"),
        (("kafka.caSecret=kafka-ca",), "kafka.caSecret needs TLS"),
        (("kafka.securityProtocol=SSL", "kafka.sslCheckHostname=no"), "sslCheckHostname"),
        (("kafka.securityProtocol=SSL", "kafka.clientCertSecret=t", "kafka.clientKeyKey="), "clientKeyKey"),
    ],
)
def test_kafka_tls_values_that_cannot_work_fail(helm: str, sets: tuple[str, ...], complaint: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    assert complaint in render_fails(helm, *args)


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_c2pa_trust_files_are_mounted_from_an_existing_configmap_or_secret(render: Render, source: str) -> None:
    """Every path in MOTIONGUARD_TRUST_* is a key of the mounted ConfigMap/Secret, under its mount path."""
    values = CI_DIR / "provenance-values.yaml"
    sets = ("provenance.trust.existingConfigMap=", "provenance.trust.existingSecret=c2pa") if source == "secret" else ()
    manifests = render(values, *sets)
    spec = pod_spec(manifests)
    (worker,) = spec["containers"]
    (mount,) = [m for m in worker["volumeMounts"] if m["name"] == "c2pa-trust"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "c2pa-trust"]
    assert mount["readOnly"] is True
    assert (volume[source]["name" if source == "configMap" else "secretName"]) in {"c2pa-trust", "c2pa"}
    items = {item["key"]: item["path"] for item in volume[source]["items"]}
    settings = settings_from_env(only(manifests, "ConfigMap")["data"])
    for paths, keys in (
        (settings.trust_anchors, ["c2pa-trust-anchors.pem"]),
        (settings.trust_allowed_list, ["newsroom-signer.pem"]),
    ):
        assert list(paths) == [f"{mount['mountPath']}/{items[key]}" for key in keys]
    assert settings.capture_claim_clears is True
    defaults = render()
    assert not [v for v in pod_spec(defaults)["volumes"] if v["name"] == "c2pa-trust"]
    assert "MOTIONGUARD_TRUST_ANCHORS" not in only(defaults, "ConfigMap")["data"]


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (("provenance.trust.existingConfigMap=a", "provenance.trust.existingSecret=b"), "not both"),
        (("provenance.trust.anchorKeys={a.pem}",), "need provenance.trust.existingConfigMap or existingSecret"),
        (("provenance.trust.existingSecret=c2pa",), "name the PEM keys"),
    ],
)
def test_c2pa_trust_values_that_cannot_work_fail(helm: str, sets: tuple[str, ...], complaint: str) -> None:
    error = render_fails(helm, *[part for item in sets for part in ("--set", item)])
    assert complaint in error, error


def test_model_bundle_from_an_init_container(render: Render) -> None:
    manifests = render(
        None,
        "model.bundle.source=initContainer",
        "model.bundle.initContainer.image.repository=registry.example/motionguard-bundle",
        "model.bundle.initContainer.image.tag=2024-06",
    )
    spec = pod_spec(manifests)
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.example/motionguard-bundle:2024-06"
    assert init["command"] == ["cp", "-R", "/bundle/.", "/models/bundle/"]
    (worker,) = spec["containers"]
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["model-bundle"] == {"name": "model-bundle", "mountPath": "/models/bundle", "readOnly": True}
    assert only(manifests, "ConfigMap")["data"]["MOTIONGUARD_BUNDLE"] == "/models/bundle"


@pytest.mark.parametrize("values", ["keda-values.yaml", "external-secret-values.yaml", "mtls-values.yaml"])
def test_keda_trigger_uses_known_kafka_scaler_parameters(render: Render, schemas: Path, values: str) -> None:
    """The CRD takes any string metadata: check names and enums against KEDA's Kafka scaler."""
    scaler = json.loads((schemas / "keda" / "kafka-scaler.json").read_text())
    manifests = render(CI_DIR / values)
    scaled = only(manifests, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    for name, value in trigger["metadata"].items():
        assert name in scaler and "triggerMetadata" in scaler[name]["from"], f"KEDA's kafka trigger has no {name}"
        assert isinstance(value, str), name
        if scaler[name]["enum"]:
            assert value in scaler[name]["enum"], f"{name}={value!r} not in {scaler[name]['enum']}"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == WorkerSettings(app_id="motionguard").uploads_group
    assert metadata["topic"] == "video-uploads"
    assert metadata["offsetResetPolicy"] == "earliest"
    assert scaled["spec"]["maxReplicaCount"] <= int(
        only(manifests, "ConfigMap")["data"]["MOTIONGUARD_TOPIC_PARTITIONS"]
    )
    assert scaled["spec"]["scaleTargetRef"]["name"] == only(manifests, "Deployment")["metadata"]["name"]
    assert "replicas" not in only(manifests, "Deployment")["spec"], "KEDA owns the replica count"
    for auth in [m for m in manifests if m["kind"] == "TriggerAuthentication"]:
        for ref in auth["spec"]["secretTargetRef"]:
            assert "authParams" in scaler[ref["parameter"]]["from"], ref["parameter"]


def test_keda_sasl_mechanism_names(render: Render) -> None:
    for mechanism, keda_name in {
        "PLAIN": "plaintext",
        "SCRAM-SHA-256": "scram_sha256",
        "SCRAM-SHA-512": "scram_sha512",
    }.items():
        manifests = render(
            CI_DIR / "keda-values.yaml",
            "kafka.securityProtocol=SASL_PLAINTEXT",
            "kafka.existingSecret=kafka-creds",
            f"kafka.saslMechanism={mechanism}",
        )
        metadata = only(manifests, "ScaledObject")["spec"]["triggers"][0]["metadata"]
        assert (metadata["sasl"], metadata["tls"]) == (keda_name, "disable")


def test_servicemonitor_scrapes_the_metrics_port_as_job_motionguard(render: Render) -> None:
    manifests = render(CI_DIR / "servicemonitor-values.yaml")
    monitor = only(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == only(manifests, "Service")["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "motionguard"} in endpoint["relabelings"]
    assert monitor["spec"]["selector"]["matchLabels"] == only(manifests, "Service")["spec"]["selector"]


def test_prometheusrule_carries_the_deploy_rules(render: Render) -> None:
    rule = only(render(CI_DIR / "prometheusrule-values.yaml"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


@pytest.mark.parametrize("values", [None, CI_DIR / "servicemonitor-values.yaml"], ids=values_id)
def test_notes_tell_how_to_reach_the_metrics(helm: str, tmp_path: Path, values: Path | None) -> None:
    # `helm install --dry-run` needs a cluster; render NOTES.txt through a copy of the chart that
    # wraps it in a ConfigMap instead.
    chart = tmp_path / "motionguard"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_check.tpl").write_text('{{- define "notes.check" -}}' + notes + "{{- end }}")
    (chart / "templates" / "notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ include "notes.check" . | quote }}\n'
    )
    args = [
        helm,
        "template",
        RELEASE,
        str(chart),
        "--kube-version",
        LATEST_KUBERNETES,
        "--show-only",
        "templates/notes-check.yaml",
    ]
    if values is not None:
        args += ["--values", str(values)]
    rendered = yaml.safe_load(run_tool(args).stdout)["data"]["notes"]
    assert "port-forward service/mg-motionguard 6066:6066" in rendered
    assert "/metrics" in rendered and "/ready" in rendered
    assert 'job="motionguard"' in rendered


# --- documentation ------------------------------------------------------------------------------------------


#: Values whose default is a Kubernetes object, documented as a whole.
OBJECT_VALUES = {"nodeSelector", "resources", "updateStrategy"}


def leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in OBJECT_VALUES:
            paths += leaf_paths(value, path)
        else:
            paths.append(path)
    return paths


def test_every_value_is_documented() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    leaves = set(leaf_paths(values))
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    seen = set()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9_]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([key for _, key in stack] + [match.group(2)])
        stack.append((indent, match.group(2)))
        if path in leaves:
            seen.add(path)
            assert lines[number - 1].lstrip().startswith("#"), f"values.yaml line {number + 1}: {path} has no comment"
    assert seen == leaves
    readme = (CHART / "README.md").read_text()
    for path in sorted(leaves):
        assert f"`{path}`" in readme, f"README.md's values table lacks {path}"


def test_chart_uses_the_worker_prefix() -> None:
    configmap = (CHART / "templates" / "configmap.yaml").read_text()
    assert PREFIX == "MOTIONGUARD_" and configmap.count("MOTIONGUARD_") > 10


# --- the review console (optional) ---------------------------------------------------------------------------


def test_review_console_is_off_by_default_and_secure_when_on(render: Render) -> None:
    assert not [m for m in render() if component(m) == "review"]
    manifests = render(CI_DIR / "review-values.yaml")
    deployment = only(manifests, "Deployment", of="review")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
    (console,) = spec["containers"]
    security = console["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == ["ALL"]
    assert console["args"][-1] == "review"
    # Its pods are selected by its own Service only: the worker's selectors never match them.
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    worker_selector = only(manifests, "Deployment")["spec"]["selector"]["matchLabels"]
    assert not worker_selector.items() <= pod_labels.items()
    assert only(manifests, "Service", of="review")["spec"]["selector"].items() <= pod_labels.items()
    # Settings: the worker ConfigMap (Kafka, topics, URI guards) plus its own; secrets from existing Secrets.
    env: dict[str, str] = {}
    for ref in console["envFrom"]:
        env.update(next(m for m in manifests if m["kind"] == "ConfigMap" and
                        m["metadata"]["name"] == ref["configMapRef"]["name"])["data"])  # fmt: skip
    for variable in console["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"]["secretKeyRef"]["name"] == "motionguard-review"
            env[variable["name"]] = "x" * 40
        else:
            env[variable["name"]] = variable["value"]
    review = review_settings_from_env(env)
    settings_from_env(env)  # the worker's settings parse too (the review ones are not "unknown")
    assert review.audit_fraction == 0.02 and review.cookie_secure is True
    assert review.port == console["ports"][0]["containerPort"]
    users = next(v for v in spec["volumes"] if v["name"] == "users")
    assert users["secret"]["secretName"] == "motionguard-review-users"
    assert review.users_file.startswith(next(m["mountPath"] for m in console["volumeMounts"] if m["name"] == "users"))
    ingress = only(manifests, "Ingress", of="review")
    assert ingress["spec"]["tls"][0]["secretName"] == "review-example-com-tls"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["port"] == {"name": "http"}  # the console, never the metrics port


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (("review.enabled=true",), "sessionSecret"),
        (("review.enabled=true", "review.sessionSecret.existingSecret=s"), "nobody could sign in"),
        (("review.enabled=true", "review.sessionSecret.existingSecret=s", "review.proxy.userHeader=X-User"),
         "trustedProxies"),
        (("review.auditFraction=2",), "auditFraction"),
        (("review.enable=true",), "enable"),
    ],
)  # fmt: skip
def test_review_values_that_cannot_work_fail(helm: str, sets: tuple[str, ...], complaint: str) -> None:
    args = [arg for item in sets for arg in ("--set", item)]
    assert complaint in render_fails(helm, *args)
