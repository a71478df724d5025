"""The Helm chart (helm/convstream): lints, renders for the default values and for
values-full.yaml (everything on), every manifest is valid for the pinned Kubernetes version,
and the things operations rely on hold: non-root read-only pods, probes on /metrics, state
on a volume, credentials only as Secret references, the `helm test` doctor Pod."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from streams.config import Settings
from streams.doctor.accounts import load_accounts
from tests.support.ops_files import CHART, DASHBOARD, FULL_VALUES, ROOT, RULES, promtool

pytestmark = pytest.mark.ops

#: The Kubernetes version manifests are validated against (and `helm lint` assumes).
KUBERNETES_VERSION = "1.31.0"
#: Prometheus Operator CRDs: not in the Kubernetes schemas; their structure is checked here.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
RELEASE = "ads"
NAMESPACE = "conversions"
SECRET_LIKE = re.compile(r"TOKEN|SECRET|PASSWORD|KEY(?!_FILE_PATH)", re.IGNORECASE)

Manifests = dict[str, list[dict[str, Any]]]


def _full_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(FULL_VALUES.read_text())
    return values


def render(values: dict[str, Any] | None = None) -> Manifests:
    """Rendered manifests by kind (empty templates dropped)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    by_kind: Manifests = {}
    for path, text in rendered.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                by_kind.setdefault(document["kind"], []).append(document)
    return by_kind


@pytest.fixture(scope="module")
def default() -> Manifests:
    return render()


@pytest.fixture(scope="module")
def full() -> Manifests:
    return render(_full_values())


def one(manifests: Manifests, kind: str) -> dict[str, Any]:
    [found] = manifests[kind]
    return found


def job(manifests: Manifests, component: str) -> dict[str, Any]:
    """The one Job of ``component`` (replay, topics)."""
    [found] = [
        j
        for j in manifests["Job"]
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return found


def containers(manifests: Manifests) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind, pod spec, container) for every workload container (test Pods included)."""
    for kind in ("StatefulSet", "Job", "Pod"):
        for workload in manifests.get(kind, []):
            spec = workload["spec"] if kind == "Pod" else workload["spec"]["template"]["spec"]
            for container in spec["containers"]:
                yield kind, spec, container


@pytest.mark.parametrize("values_name", ["default", "full"])
def test_lint_is_clean(values_name: str) -> None:
    values = _full_values() if values_name == "full" else None
    report = helm.lint(
        CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}", namespace=NAMESPACE
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"], report
    assert not problems, report


@pytest.mark.parametrize("values_name", ["default", "full"])
def test_every_manifest_is_valid_kubernetes(values_name: str, request: Any) -> None:
    manifests: Manifests = request.getfixturevalue(values_name)
    for kind, documents in manifests.items():
        for document in documents:
            if kind in CRD_KINDS:
                continue
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_default_render_has_the_worker_parts_only(default: Manifests) -> None:
    assert sorted(default) == [
        "ConfigMap",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    assert "Job" not in default, "the replay Job is off by default"
    assert "Pod" not in default, "no doctor test Pod without doctor.accounts"
    dashboards = [c for c in default["ConfigMap"] if "convstream.json" in c["data"]]
    assert len(dashboards) == 1
    names = {c["metadata"]["name"] for c in default["ConfigMap"]}
    assert "ads-convstream-accounts" not in names
    [worker] = one(default, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert "CONVSTREAM_ACCOUNTS_FILE" not in {e["name"] for e in worker["env"]}
    assert all(m["name"] != "accounts" for m in worker["volumeMounts"])


def test_full_render_has_every_part(full: Manifests) -> None:
    for kind in (
        "ConfigMap",
        "Job",
        "Pod",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "StatefulSet",
        "NetworkPolicy",
    ):
        assert kind in full, kind


@pytest.mark.parametrize("values_name", ["default", "full"])
def test_pods_run_non_root_on_a_read_only_root(values_name: str, request: Any) -> None:
    manifests: Manifests = request.getfixturevalue(values_name)
    seen = 0
    for kind, pod, container in containers(manifests):
        seen += 1
        assert pod["securityContext"]["runAsNonRoot"] is True, kind
        assert pod["securityContext"]["runAsUser"] == 10001, kind
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, kind
        assert context["allowPrivilegeEscalation"] is False, kind
        assert context["capabilities"]["drop"] == ["ALL"], kind
        assert context["runAsNonRoot"] is True, kind
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], "writable /tmp on an emptyDir"
        assert pod.get("automountServiceAccountToken") is False, kind
    assert seen == (4 if values_name == "full" else 1)


def test_worker_probes_metrics_and_state_lives_on_a_volume(default: Manifests) -> None:
    statefulset = one(default, "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    config = next(c for c in default["ConfigMap"] if "CONVSTREAM_BROKER" in c["data"])["data"]
    port = int(config["CONVSTREAM_METRICS_PORT"])
    assert port == 9108
    [metrics_port] = worker["ports"]
    assert metrics_port == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # /healthz turns 503 once a partition stalls for CONVSTREAM_STALL_SECONDS: the probe
    # restarts the worker within a few minutes of that, not hours.
    assert float(config["CONVSTREAM_STALL_SECONDS"]) == 300
    probe = worker["livenessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 300
    assert worker["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert worker["args"] == ["worker"]
    assert worker["envFrom"] == [{"configMapRef": {"name": "ads-convstream"}}]
    assert worker["resources"]["requests"]
    assert worker["resources"]["limits"]["memory"]
    assert pod["terminationGracePeriodSeconds"] >= 60, "time for the final flush"
    assert statefulset["spec"]["minReadySeconds"] == 30
    # CONVSTREAM_DATA_DIR is a mounted PVC (persistence on by default).
    data_dir = config["CONVSTREAM_DATA_DIR"]
    [data_mount] = [m for m in worker["volumeMounts"] if m["mountPath"] == data_dir]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == data_mount["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_without_persistence_the_data_dir_is_an_empty_dir() -> None:
    manifests = render({"persistence": {"enabled": False}})
    statefulset = one(manifests, "StatefulSet")
    assert "volumeClaimTemplates" not in statefulset["spec"]
    pod = statefulset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_selectors_match_the_pods(full: Manifests) -> None:
    statefulset = one(full, "StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    selectors = [statefulset["spec"]["selector"]["matchLabels"]]
    selectors.append(one(full, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    selectors += [service["spec"]["selector"] for service in full["Service"]]
    for selector in selectors:
        assert selector.items() <= pod_labels.items(), selector
    services = {s["metadata"]["name"]: s for s in full["Service"]}
    assert services["ads-convstream-headless"]["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == "ads-convstream-headless"


def test_credentials_are_only_secret_references(full: Manifests) -> None:
    assert "Secret" not in full, "the chart never creates a Secret"
    for config in full["ConfigMap"]:
        for name in config["data"]:
            assert not SECRET_LIKE.search(name), name
    for kind, _pod, container in containers(full):
        for entry in container["env"]:
            if SECRET_LIKE.search(entry["name"]):
                assert "value" not in entry, (kind, entry["name"])
                assert "secretKeyRef" in entry["valueFrom"], (kind, entry["name"])
    pod = one(full, "StatefulSet")["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    refs = {name: e["valueFrom"]["secretKeyRef"] for name, e in env.items() if "valueFrom" in e}
    assert refs == {
        "GOOGLE_ADS_DEVELOPER_TOKEN": {"name": "google-ads-credentials", "key": "dev-token-key"},
        "YANDEX_METRICA_OAUTH_TOKEN": {"name": "yandex-credentials", "key": "token-key"},
    }
    # The service-account key file instead of the OAuth trio, mounted read-only.
    key_path = env["GOOGLE_ADS_JSON_KEY_FILE_PATH"]["value"]
    assert key_path == "/var/run/secrets/convstream/google-ads/sa.json"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["google-ads-key"]["secret"]["secretName"] == "google-ads-credentials"
    assert volumes["google-ads-key"]["secret"]["items"] == [{"key": "sa.json", "path": "sa.json"}]
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["google-ads-key"]["readOnly"] is True
    assert mounts["google-ads-key"]["mountPath"] == "/var/run/secrets/convstream/google-ads"
    assert env["CONVSTREAM_DEFAULT_PHONE_REGION"] == {
        "name": "CONVSTREAM_DEFAULT_PHONE_REGION",
        "value": "DE",
    }


def test_replay_job_gets_no_destination_credentials(full: Manifests) -> None:
    """Replay moves records between topics: least privilege, no API credentials."""
    pod = job(full, "replay")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    names = {e["name"] for e in container["env"]}
    assert names == {"HOME", "CONVSTREAM_DEFAULT_PHONE_REGION"}
    assert all("secret" not in volume for volume in pod["volumes"])


def test_oauth_credentials_are_read_from_the_secret() -> None:
    manifests = render({"googleAds": {"enabled": True, "existingSecret": "gads"}})
    [worker] = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in worker["env"] if "valueFrom" in e}
    assert refs == {
        "GOOGLE_ADS_DEVELOPER_TOKEN": {"name": "gads", "key": "developer-token"},
        "GOOGLE_ADS_CLIENT_ID": {"name": "gads", "key": "client-id"},
        "GOOGLE_ADS_CLIENT_SECRET": {"name": "gads", "key": "client-secret"},
        "GOOGLE_ADS_REFRESH_TOKEN": {"name": "gads", "key": "refresh-token"},
    }


@pytest.mark.parametrize(
    "values",
    [
        {"googleAds": {"enabled": True}},
        {"yandexMetrica": {"enabled": True}},
        {"config": {"YANDEX_METRICA_OAUTH_TOKEN": "inline"}},
        {"replicaCount": -1},
        {"unknownKey": 1},
        {"replay": {"stage": "somewhere"}},
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def test_service_monitor_scrapes_the_metrics_service(full: Manifests) -> None:
    monitor = one(full, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    services = [
        s
        for s in full["Service"]
        if s["metadata"]["labels"].items() >= spec["selector"]["matchLabels"].items()
    ]
    [service] = services
    assert service["metadata"]["name"] == "ads-convstream-metrics"
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The rules select job="convstream": the job label comes from the Service's name label.
    assert service["metadata"]["labels"][spec["jobLabel"]] == "convstream"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_prometheus_rule_is_the_rules_file(full: Manifests) -> None:
    rule = one(full, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    for group in rule["spec"]["groups"]:
        assert group["name"]
        assert group["rules"]
        for entry in group["rules"]:
            assert set(entry) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert entry["expr"]


def test_google_diagnostics_threshold_comes_from_the_values(tmp_path: Path) -> None:
    """The default renders the rules file as promtool tests it; another threshold changes
    that one comparison only, and the result is still valid for promtool."""
    comparison = 'convstream_google_diagnostics_daily_success_rate{job="convstream"}) < '
    default = one(render({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    assert default["spec"] == yaml.safe_load(RULES.read_text())
    values = {
        "metrics": {"prometheusRule": {"enabled": True}},
        "alerts": {"googleDiagnosticsSuccessRateThreshold": 0.75},
    }
    spec = one(render(values), "PrometheusRule")["spec"]
    exprs = {r["alert"]: r["expr"] for g in spec["groups"] for r in g["rules"]}
    assert comparison + "0.75" in exprs["ConvstreamGoogleDiagnosticsLowSuccessRate"]
    assert "< 0.9" not in exprs["ConvstreamGoogleDiagnosticsLowSuccessRate"]
    expected = yaml.safe_load(RULES.read_text())
    for group in expected["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ConvstreamGoogleDiagnosticsLowSuccessRate":
                rule["expr"] = rule["expr"].replace(comparison + "0.9", comparison + "0.75")
    assert spec == expected
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("threshold", [0, 1.5, "0.9"])
def test_schema_rejects_bad_google_diagnostics_thresholds(threshold: object) -> None:
    values = {"alerts": {"googleDiagnosticsSuccessRateThreshold": threshold}}
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def test_dashboard_config_map_holds_the_dashboard(full: Manifests) -> None:
    [config] = [c for c in full["ConfigMap"] if "convstream.json" in c.get("data", {})]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Ads"}
    assert json.loads(config["data"]["convstream.json"]) == json.loads(DASHBOARD.read_text())


def test_replay_job_passes_the_filters(full: Manifests) -> None:
    replay = job(full, "replay")
    assert replay["metadata"]["name"] == "ads-convstream-replay-1"
    pod = replay["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert (
        container["image"]
        == one(full, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    assert container["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    assert container["args"] == [
        "replay",
        "--error-code=GOOGLE_ADS_AUTH_FAILED",
        "--error-code=YANDEX_AUTH_FAILED",
        "--stage=upload",
        "--destination=google_ads",
        "--since=2026-11-20T00:00:00Z",
        "--until=2026-11-21T00:00:00Z",
        "--limit=1000000",
        "--rate=50",
        "--max-replays=3",
        "--to=conversions",
        "--dry-run",
    ]


def test_replay_job_with_defaults_has_only_the_dry_run_flag() -> None:
    replay = one(render({"replay": {"enabled": True}}), "Job")
    [container] = replay["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["replay", "--dry-run"]


def test_config_map_carries_the_settings(full: Manifests) -> None:
    config = next(c for c in full["ConfigMap"] if "CONVSTREAM_BROKER" in c["data"])["data"]
    assert config["CONVSTREAM_BROKER"] == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert config["CONVSTREAM_TOPIC_REPLICATION_FACTOR"] == "3"
    assert config["CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    # Numbers in values are written as the worker parses them (never 1e+09).
    assert config["CONVSTREAM_BATCH_WINDOW_SECONDS"] == "0.5"
    assert config["CONVSTREAM_YANDEX_MAX_FILE_BYTES"] == "1000000000"
    assert config["CONVSTREAM_DEDUPE_TTL_DAYS"] == "30"
    assert config["CONVSTREAM_DRY_RUN"] == "true"
    assert config["CONVSTREAM_GOOGLE_DIAGNOSTICS_INTERVAL_SECONDS"] == "3600"
    assert config["CONVSTREAM_GOOGLE_ADS_MAX_RPS"] == "10"
    assert config["CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS"] == "10"
    assert config["CONVSTREAM_DATA_DIR"] == "/var/lib/convstream"
    assert config["GOOGLE_ADS_LOGIN_CUSTOMER_ID"] == "123-456-7890"
    assert config["GOOGLE_ADS_API_VERSION"] == "v26"
    assert config["CONVSTREAM_METRICS_ADDRESS"] == "::"
    assert all(isinstance(value, str) for value in config.values())


def _notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return rendered["convstream/templates/NOTES.txt"]


def test_notes_warn_about_idle_replicas() -> None:
    assert "sit idle" not in _notes({"replicaCount": 8})
    warning = "replicaCount=9 is above CONVSTREAM_BATCH_PARTITIONS=8: 1 pod(s)"
    assert warning in _notes({"replicaCount": 9})
    partitions = {"replicaCount": 9, "config": {"CONVSTREAM_BATCH_PARTITIONS": "12"}}
    assert "sit idle" not in _notes(partitions)


def _known_variables() -> set[str]:
    """Every variable name streams/config.py reads."""
    source = (ROOT / "streams" / "config.py").read_text()
    return set(re.findall(r'"((?:CONVSTREAM|GOOGLE_ADS|YANDEX_METRICA)_[A-Z0-9_]+)"', source))


@pytest.mark.parametrize("values_name", ["default", "full"])
def test_worker_environment_is_accepted_by_the_settings(values_name: str, request: Any) -> None:
    """The ConfigMap plus the pod's env, secrets filled with placeholders, is a valid
    configuration for the worker, and names only variables the worker reads."""
    manifests: Manifests = request.getfixturevalue(values_name)
    config = next(c for c in manifests["ConfigMap"] if "CONVSTREAM_BROKER" in c["data"])["data"]
    [worker] = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    env = dict(config)
    for entry in worker["env"]:
        env[entry["name"]] = entry.get("value", "placeholder-secret")
    unknown = {name for name in env if name != "HOME"} - _known_variables()
    assert not unknown, f"variables the worker does not read: {sorted(unknown)}"
    settings = Settings.from_env(env)
    assert settings.metrics_port == 9108
    assert str(settings.data_dir) == "/var/lib/convstream"
    assert (settings.google_ads is not None) == (values_name == "full")
    assert (settings.yandex_oauth_token is not None) == (values_name == "full")
    accounts_file = Path("/etc/convstream/accounts.toml") if values_name == "full" else None
    assert settings.accounts_file == accounts_file


ACCOUNTS = """\
[[google_ads]]
customer_id = "123-456-7890"
click_conversion_actions = ["Offline purchase"]
"""


def _doctor_pod(manifests: Manifests) -> dict[str, Any]:
    pod = one(manifests, "Pod")
    assert pod["metadata"]["name"] == "ads-convstream-doctor"
    return pod


def test_doctor_is_a_helm_test_pod(full: Manifests) -> None:
    """`helm test` runs the preflight once, with the worker's image, settings, credentials and
    security context; the Pod stays (its log is the report) until the next test run."""
    pod = _doctor_pod(full)
    assert pod["metadata"]["annotations"] == {
        "helm.sh/hook": "test",
        "helm.sh/hook-delete-policy": "before-hook-creation",
    }
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "doctor"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    [doctor] = spec["containers"]
    assert doctor["args"] == [
        "doctor",
        "--accounts",
        "/etc/convstream/accounts.toml",
        "--diagnostics",
    ]
    worker_pod = one(full, "StatefulSet")["spec"]["template"]["spec"]
    [worker] = worker_pod["containers"]
    assert doctor["image"] == worker["image"]
    assert doctor["envFrom"] == worker["envFrom"] == [{"configMapRef": {"name": "ads-convstream"}}]
    worker_env = [e for e in worker["env"] if e["name"] != "CONVSTREAM_ACCOUNTS_FILE"]
    assert doctor["env"] == worker_env, "the worker's settings and Secret references"
    assert doctor["securityContext"] == worker["securityContext"]
    for key in ("securityContext", "serviceAccountName", "imagePullSecrets"):
        assert spec[key] == worker_pod[key], key
    assert doctor["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    mounts = {m["name"]: m for m in doctor["volumeMounts"]}
    assert mounts["accounts"] == {
        "name": "accounts",
        "mountPath": "/etc/convstream",
        "readOnly": True,
    }
    assert mounts["google-ads-key"] == {
        "name": "google-ads-key",
        "mountPath": "/var/run/secrets/convstream/google-ads",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["accounts"]["configMap"]["name"] == "ads-convstream-accounts"
    assert volumes["google-ads-key"] == next(
        v for v in worker_pod["volumes"] if v["name"] == "google-ads-key"
    )


def test_accounts_config_map_holds_the_values_file(full: Manifests, tmp_path: Path) -> None:
    """The mounted accounts.toml is doctor.accounts, and the doctor's own parser reads it."""
    [config] = [c for c in full["ConfigMap"] if c["metadata"]["name"] == "ads-convstream-accounts"]
    assert set(config["data"]) == {"accounts.toml"}
    text = config["data"]["accounts.toml"]
    assert tomllib.loads(text) == tomllib.loads(_full_values()["doctor"]["accounts"])
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    accounts = load_accounts(path)
    [google] = accounts.google_ads
    assert google.customer_id == "1234567890"
    assert google.login_customer_id == "1112223333"
    assert google.click_actions == ("987654321", "Offline purchase")
    [yandex] = accounts.yandex_metrica
    assert yandex.counter_id == "44147844"


def test_worker_pods_get_the_accounts_file(full: Manifests) -> None:
    """`kubectl exec ... -- convstream doctor` finds the accounts without flags."""
    pod = one(full, "StatefulSet")["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["CONVSTREAM_ACCOUNTS_FILE"] == {
        "name": "CONVSTREAM_ACCOUNTS_FILE",
        "value": "/etc/convstream/accounts.toml",
    }
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert mounts["accounts"] == {
        "name": "accounts",
        "mountPath": "/etc/convstream",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["accounts"]["configMap"]["name"] == "ads-convstream-accounts"


def test_doctor_with_only_accounts_set() -> None:
    """The minimal values: no --diagnostics, the default resources, no key-file volume; the
    manifests are valid Kubernetes."""
    manifests = render({"doctor": {"accounts": ACCOUNTS}})
    [doctor] = _doctor_pod(manifests)["spec"]["containers"]
    assert doctor["args"] == ["doctor", "--accounts", "/etc/convstream/accounts.toml"]
    assert doctor["resources"]["limits"]["memory"] == "512Mi"
    assert {m["name"] for m in doctor["volumeMounts"]} == {"tmp", "accounts"}
    assert {e["name"] for e in doctor["env"]} == {"HOME"}
    [config] = [c for c in manifests["ConfigMap"] if "accounts.toml" in c["data"]]
    assert config["data"]["accounts.toml"] == ACCOUNTS
    for documents in manifests.values():
        for document in documents:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_values_yaml_example_accounts_are_valid(tmp_path: Path) -> None:
    """The commented example of doctor.accounts in values.yaml, uncommented, is a valid
    accounts file."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index("  # accounts: |") + 1
    end = lines.index('  accounts: ""')
    example = "\n".join(line.removeprefix("  #").removeprefix("   ") for line in lines[start:end])
    path = tmp_path / "accounts.toml"
    path.write_text(example + "\n")
    accounts = load_accounts(path)
    assert len(accounts.google_ads) == 1
    assert len(accounts.yandex_metrica) == 1


@pytest.mark.parametrize(
    "doctor",
    [{"accounts": 1}, {"accounts": ["x"]}, {"diagnostics": "yes"}, {"accountsFile": "a.toml"}],
)
def test_schema_rejects_bad_doctor_values(doctor: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"doctor": doctor})


# --- metrics bind address, NetworkPolicy, and what the schema refuses (issue 19, item 10) ---


def _worker_config(manifests: Manifests) -> dict[str, str]:
    config: dict[str, str] = next(
        c for c in manifests["ConfigMap"] if "CONVSTREAM_BROKER" in c["data"]
    )["data"]
    return config


def test_metrics_bind_address_is_a_chart_value(default: Manifests) -> None:
    assert _worker_config(default)["CONVSTREAM_METRICS_ADDRESS"] == "0.0.0.0"
    local = render({"metrics": {"bindAddress": "127.0.0.1"}})
    config = _worker_config(local)
    assert config["CONVSTREAM_METRICS_ADDRESS"] == "127.0.0.1"
    assert Settings.from_env(config).metrics_address == "127.0.0.1"


def test_no_network_policy_unless_enabled(default: Manifests) -> None:
    assert "NetworkPolicy" not in default


def test_network_policy_with_defaults_limits_ingress_and_egress() -> None:
    manifests = render({"networkPolicy": {"enabled": True}})
    policy = one(manifests, "NetworkPolicy")
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    spec = policy["spec"]
    statefulset = one(manifests, "StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # Ingress: only the metrics port, only from the monitoring namespace.
    [ingress] = spec["ingress"]
    assert ingress["ports"] == [{"port": 9108, "protocol": "TCP"}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # Egress: DNS, Kafka's bootstrap port, HTTPS to public addresses; nothing else.
    dns, kafka, https = spec["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert kafka == {"ports": [{"port": 9092, "protocol": "TCP"}]}
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]
    [block] = https["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block["ipBlock"]["except"])


def test_network_policy_of_the_full_values(full: Manifests) -> None:
    spec = one(full, "NetworkPolicy")["spec"]
    [ingress] = spec["ingress"]
    [peer] = ingress["from"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    _, kafka, _, extra = spec["egress"]
    assert kafka["ports"] == [{"port": 9092, "protocol": "TCP"}], "one rule per distinct port"
    assert kafka["to"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}
    ]
    assert extra["ports"] == [{"port": 3128, "protocol": "TCP"}]


def test_network_policy_kafka_ports_follow_the_bootstrap_list() -> None:
    values = {
        "networkPolicy": {"enabled": True, "egress": {"dns": {"enabled": False}}},
        "kafka": {"bootstrap": "b1.example:9093,b2.example:9094,b3.example:9093"},
    }
    kafka, _https = one(render(values), "NetworkPolicy")["spec"]["egress"]
    assert kafka["ports"] == [{"port": 9093, "protocol": "TCP"}, {"port": 9094, "protocol": "TCP"}]
    values["networkPolicy"]["egress"]["kafka"] = {"ports": [19092]}  # type: ignore[index]
    kafka, _https = one(render(values), "NetworkPolicy")["spec"]["egress"]
    assert kafka["ports"] == [{"port": 19092, "protocol": "TCP"}]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"securityContext": {"privileged": True}}, id="privileged"),
        pytest.param(
            {"securityContext": {"allowPrivilegeEscalation": True}}, id="privilege-escalation"
        ),
        pytest.param(
            {"extraEnv": [{"name": "CONVSTREAM_FAULT_KILL_AT", "value": "after_upload:1"}]},
            id="fault-in-extraEnv",
        ),
        pytest.param({"config": {"CONVSTREAM_FAULT_KILL_AT": "after_upload:1"}}, id="fault-config"),
        pytest.param(
            {"extraEnv": [{"name": "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS", "value": "true"}]},
            id="insecure-switch-in-extraEnv",
        ),
        pytest.param(
            {"config": {"CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true"}}, id="insecure-config"
        ),
        pytest.param(
            {"extraEnv": [{"name": "YANDEX_METRICA_OAUTH_TOKEN", "value": "y0_plain"}]},
            id="plain-token",
        ),
        pytest.param(
            {"extraEnv": [{"name": "CONVSTREAM_KAFKA_SASL_PASSWORD", "value": "hunter2"}]},
            id="plain-password",
        ),
        pytest.param(
            {"extraEnv": [{"name": "MY_API_KEY", "value": "k"}]},
            id="plain-api-key",
        ),
        pytest.param(
            {
                "extraEnv": [
                    {
                        "name": "GOOGLE_ADS_CLIENT_SECRET",
                        "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                    }
                ]
            },
            id="secret-from-a-config-map",
        ),
        pytest.param({"metrics": {"bindAddress": "localhost"}}, id="bind-address-not-an-ip"),
        pytest.param(
            {"yandexMetrica": {"apiUrl": "http://api-metrika.yandex.net"}}, id="http-api-url"
        ),
        pytest.param({"config": {"CONVSTREAM_METRICS_ADDRESS": "0.0.0.0"}}, id="address-config"),
        pytest.param(
            {"networkPolicy": {"enabled": True, "metrics": {"namespaceSelector": None}}},
            id="metrics-from-every-namespace",
        ),
        pytest.param(
            {"networkPolicy": {"egress": {"https": {"cidrs": [{"cidr": "api.yandex.net"}]}}}},
            id="host-name-as-cidr",
        ),
    ],
)
def test_schema_refuses_unsafe_values(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize(
    "entry",
    [
        {
            "name": "YANDEX_METRICA_OAUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "y", "key": "t"}},
        },
        {"name": "GOOGLE_ADS_TOKEN_URI", "value": "https://oauth2.googleapis.com/token"},
        {"name": "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE", "value": "/var/run/secrets/p"},
        {"name": "CONVSTREAM_DEFAULT_PHONE_REGION", "value": "DE"},
    ],
)
def test_schema_accepts_secret_references_and_plain_settings(entry: dict[str, Any]) -> None:
    manifests = render({"extraEnv": [entry]})
    [worker] = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert entry in worker["env"]


ADVERTISERS = CHART / "values-advertisers.yaml"


def test_three_advertisers_get_their_map_and_secrets_read_only(tmp_path: Path) -> None:
    """values-advertisers.yaml: the map is a ConfigMap the worker's own parser accepts once
    the secrets are where the chart mounts them; every advertiser's Secret is mounted
    read-only as a whole directory (no subPath: rotated Secrets reach running pods); the
    worker and the doctor Pod read the map through CONVSTREAM_CREDENTIALS_FILE."""
    from streams.sinks.credential_sets.map import load_map

    values = yaml.safe_load(ADVERTISERS.read_text())
    manifests = render(values)
    for documents in manifests.values():
        for document in documents:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    [config] = [c for c in manifests["ConfigMap"] if "credentials.toml" in c.get("data", {})]
    assert config["metadata"]["name"] == "ads-convstream-credentials"
    text = config["data"]["credentials.toml"]
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    map_path = Path(env["CONVSTREAM_CREDENTIALS_FILE"])
    assert env["CONVSTREAM_CREDENTIALS_POLL_SECONDS"] == "5"
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["credentials-map"] == {
        "name": "credentials-map",
        "mountPath": str(map_path.parent),
        "readOnly": True,
    }
    assert volumes["credentials-map"]["configMap"]["name"] == "ads-convstream-credentials"
    secret_dirs = {}
    for name in ("acme", "globex", "initech"):
        mount = mounts[f"credentials-{name}"]
        assert mount["readOnly"] is True
        assert "subPath" not in mount
        assert volumes[f"credentials-{name}"]["secret"]["secretName"] == f"convstream-{name}"
        secret_dirs[mount["mountPath"]] = name
    # The map's paths are exactly the mounted directories: rebuild that tree locally.
    local = text
    for mount_path, name in secret_dirs.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "google.json").write_text('{"type": "service_account"}')
        (directory / "developer-token").write_text("t")
        (directory / "yandex-token").write_text("t")
        local = local.replace(f'"{mount_path}/', f'"{directory}/')
    assert "/var/run/" not in local, "a path in the map points outside the mounted secrets"
    path = tmp_path / "credentials.toml"
    path.write_text(local)
    mapping = load_map(path, Settings())
    assert sorted(mapping.sets) == ["acme", "globex", "initech"]
    assert mapping.select("google_ads", {"customer_id": "1234567890"}) == "acme"
    assert (
        mapping.select("google_ads", {"customer_id": "5", "login_customer_id": "1112223333"})
        == "globex"
    )
    assert mapping.select("yandex_metrica", {"counter_id": "51234568"}) == "initech"
    # The doctor Pod checks every set (no accounts file needed: the map lists the accounts).
    [doctor] = _doctor_pod(manifests)["spec"]["containers"]
    assert doctor["args"] == ["doctor"]
    assert {m["name"] for m in doctor["volumeMounts"]} >= set(mounts) - {"data"}


@pytest.mark.parametrize(
    "credentials",
    [
        {"secrets": [{"name": "Acme Corp", "existingSecret": "x"}]},
        {"secrets": [{"name": "acme"}]},
        {"pollSeconds": 0},
        {"inline": "x"},
    ],
)
def test_schema_rejects_bad_credentials_values(credentials: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"credentials": credentials})
