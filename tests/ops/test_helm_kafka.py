"""The chart's Kafka values (kafka.*): the bootstrap list, each security mode (PLAINTEXT,
SASL_SSL with SCRAM, mTLS) rendered and valid for Kubernetes, the same Kafka settings and
read-only Secret files in every pod that talks to Kafka, no secret as a value, the schema
refusing contradictory combinations, and the `convstream topics` hook Job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from streams.config import Settings
from tests.ops.test_helm_chart import KUBERNETES_VERSION, Manifests, containers, job, one, render
from tests.support.ops_files import CHART

pytestmark = pytest.mark.ops

#: The Kafka security variables of the contract (shared/DESIGN.md, "Configuration").
SECURITY_VARIABLES = {
    "CONVSTREAM_KAFKA_SECURITY_PROTOCOL",
    "CONVSTREAM_KAFKA_SASL_MECHANISM",
    "CONVSTREAM_KAFKA_SASL_USERNAME",
    "CONVSTREAM_KAFKA_SASL_PASSWORD",
    "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE",
    "CONVSTREAM_KAFKA_SSL_CA_FILE",
    "CONVSTREAM_KAFKA_SSL_CERT_FILE",
    "CONVSTREAM_KAFKA_SSL_KEY_FILE",
    "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD",
    "CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME",
}
SASL_DIR = "/var/run/secrets/convstream/kafka-sasl"
TLS_DIR = "/var/run/secrets/convstream/kafka-tls"

SASL_SSL_SCRAM = {
    "kafka": {
        "bootstrap": "b-1.msk.example:9096,b-2.msk.example:9096",
        "security": {
            "protocol": "SASL_SSL",
            "sasl": {
                "mechanism": "SCRAM-SHA-512",
                "username": "convstream",
                "existingSecret": "kafka-sasl",
            },
            "tls": {"existingSecret": "kafka-ca"},
        },
    }
}
MTLS = {
    "kafka": {
        "bootstrap": ["kafka-0.kafka:9093", "kafka-1.kafka:9093", "kafka-2.kafka:9093"],
        "security": {
            "protocol": "SSL",
            "tls": {
                "existingSecret": "convstream-client-tls",
                "certKey": "tls.crt",
                "keyKey": "tls.key",
                "checkHostname": False,
            },
        },
    }
}
#: Every pod that talks to Kafka: the worker, the replay Job, the doctor Pod, the topics hook.
EVERYTHING = {
    "replay": {"enabled": True},
    "doctor": {"accounts": '[[yandex_metrica]]\ncounter_id = "1"\ntargets = ["x"]\n'},
}


def with_everything(values: dict[str, Any]) -> dict[str, Any]:
    kafka = {**values.get("kafka", {}), "topics": {"create": True}}
    return {**EVERYTHING, **values, "kafka": kafka}


def settings_data(manifests: Manifests) -> dict[str, str]:
    config = next(c for c in manifests["ConfigMap"] if "CONVSTREAM_BROKER" in c["data"])
    data: dict[str, str] = config["data"]
    return data


def kafka_parts(container: dict[str, Any], pod: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The container's Kafka env entries that go with its mounts (the rest are the
    ConfigMap's, which the topics hook has inline), its Kafka mounts, the pod's Kafka volumes."""
    env = [
        e
        for e in container["env"]
        if e["name"].startswith("CONVSTREAM_KAFKA_")
        and (e["name"].endswith("_FILE") or "valueFrom" in e)
    ]
    mounts = [m for m in container["volumeMounts"] if m["name"].startswith("kafka-")]
    volumes = [v for v in pod["volumes"] if v["name"].startswith("kafka-")]
    return env, mounts, volumes


def assert_valid(manifests: Manifests) -> None:
    for kind, documents in manifests.items():
        for document in documents:
            if kind not in {"ServiceMonitor", "PrometheusRule"}:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_plaintext_by_default_sets_no_security_and_the_production_topic_durability() -> None:
    manifests = render()
    data = settings_data(manifests)
    assert data["CONVSTREAM_BROKER"] == "kafka:9092"
    assert data["CONVSTREAM_TOPIC_REPLICATION_FACTOR"] == "3"
    assert data["CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    assert not [name for name in data if name.startswith("CONVSTREAM_KAFKA_")]
    for _kind, pod, container in containers(manifests):
        assert kafka_parts(container, pod) == ([], [], [])
    assert "Job" not in manifests, "no topics hook unless kafka.topics.create"
    settings = Settings.from_env(data)
    assert (settings.bootstrap_servers, settings.topic_replication_factor) == ("kafka:9092", 3)


def test_sasl_ssl_with_scram_in_every_pod() -> None:
    manifests = render(with_everything(SASL_SSL_SCRAM))
    assert_valid(manifests)
    data = settings_data(manifests)
    assert data["CONVSTREAM_BROKER"] == "b-1.msk.example:9096,b-2.msk.example:9096"
    assert {k: v for k, v in data.items() if k.startswith("CONVSTREAM_KAFKA_")} == {
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CONVSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CONVSTREAM_KAFKA_SASL_USERNAME": "convstream",
        "CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "true",
    }
    seen = []
    for kind, pod, container in containers(manifests):
        env, mounts, volumes = kafka_parts(container, pod)
        seen.append(container["name"])
        assert env == [
            {"name": "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE", "value": f"{SASL_DIR}/password"},
            {"name": "CONVSTREAM_KAFKA_SSL_CA_FILE", "value": f"{TLS_DIR}/ca.crt"},
        ], kind
        assert mounts == [
            {"name": "kafka-sasl", "mountPath": SASL_DIR, "readOnly": True},
            {"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True},
        ], kind
        assert volumes == [
            {
                "name": "kafka-sasl",
                "secret": {
                    "secretName": "kafka-sasl",
                    "defaultMode": 0o440,
                    "items": [{"key": "password", "path": "password"}],
                },
            },
            {
                "name": "kafka-tls",
                "secret": {
                    "secretName": "kafka-ca",
                    "defaultMode": 0o440,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                },
            },
        ], kind
    assert sorted(seen) == ["doctor", "replay", "topics", "worker"]


def test_mtls_mounts_ca_certificate_and_key() -> None:
    manifests = render(with_everything(MTLS))
    assert_valid(manifests)
    data = settings_data(manifests)
    assert data["CONVSTREAM_BROKER"] == "kafka-0.kafka:9093,kafka-1.kafka:9093,kafka-2.kafka:9093"
    assert data["CONVSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert data["CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME"] == "false"
    assert "CONVSTREAM_KAFKA_SASL_MECHANISM" not in data
    for kind, pod, container in containers(manifests):
        env, mounts, volumes = kafka_parts(container, pod)
        assert env == [
            {"name": "CONVSTREAM_KAFKA_SSL_CA_FILE", "value": f"{TLS_DIR}/ca.crt"},
            {"name": "CONVSTREAM_KAFKA_SSL_CERT_FILE", "value": f"{TLS_DIR}/tls.crt"},
            {"name": "CONVSTREAM_KAFKA_SSL_KEY_FILE", "value": f"{TLS_DIR}/tls.key"},
        ], kind
        assert mounts == [{"name": "kafka-tls", "mountPath": TLS_DIR, "readOnly": True}], kind
        [volume] = volumes
        assert volume["secret"]["secretName"] == "convstream-client-tls"
        assert volume["secret"]["items"] == [
            {"key": key, "path": key} for key in ("ca.crt", "tls.crt", "tls.key")
        ]


def test_an_encrypted_client_key_gets_its_password_from_the_secret() -> None:
    values = {"kafka": {**MTLS["kafka"]}}
    values["kafka"]["security"] = {
        **MTLS["kafka"]["security"],
        "tls": {**MTLS["kafka"]["security"]["tls"], "keyPasswordKey": "key-password"},
    }
    [worker] = one(render(values), "StatefulSet")["spec"]["template"]["spec"]["containers"]
    [entry] = [e for e in worker["env"] if e["name"] == "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD"]
    assert entry["valueFrom"]["secretKeyRef"] == {
        "name": "convstream-client-tls",
        "key": "key-password",
    }


@pytest.mark.parametrize("values", [SASL_SSL_SCRAM, MTLS], ids=["sasl_ssl", "mtls"])
def test_only_contract_names_and_no_secret_as_a_value(values: dict[str, Any]) -> None:
    manifests = render(with_everything(values))
    names = {n for n in settings_data(manifests) if n.startswith("CONVSTREAM_KAFKA_")}
    for _kind, _pod, container in containers(manifests):
        for entry in container["env"]:
            name = entry["name"]
            if name.startswith("CONVSTREAM_KAFKA_"):
                names.add(name)
            if name in {"CONVSTREAM_KAFKA_SASL_PASSWORD", "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD"}:
                assert "value" not in entry, name
            if name.startswith("CONVSTREAM_KAFKA_") and name.endswith("_FILE"):
                assert entry["value"].startswith("/var/run/secrets/convstream/"), entry
    assert names <= SECURITY_VARIABLES
    assert "CONVSTREAM_KAFKA_SASL_PASSWORD" not in names, "the password is a file, never env"


def test_topic_durability_and_the_topics_hook_job(tmp_path: Path) -> None:
    values = with_everything(SASL_SSL_SCRAM)
    values["kafka"]["topics"] = {"replicationFactor": 5, "minInsyncReplicas": 3, "create": True}
    manifests = render(values)
    data = settings_data(manifests)
    assert data["CONVSTREAM_TOPIC_REPLICATION_FACTOR"] == "5"
    assert data["CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS"] == "3"
    hook = job(manifests, "topics")
    assert hook["metadata"]["name"] == "ads-convstream-topics"
    assert hook["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "-5",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    pod = hook["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["topics"]
    assert "envFrom" not in container, "a pre-install hook runs before the ConfigMap exists"
    assert "serviceAccountName" not in pod, "nor does the release's ServiceAccount"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {k: env[k] for k in data} == data, "the ConfigMap's settings, inline"
    given = {k: v for k, v in env.items() if v is not None}
    for name in [k for k in given if k.endswith("_FILE")]:  # the mounted secrets, stood in
        stand_in = tmp_path / name
        stand_in.write_text("mounted secret\n")
        given[name] = str(stand_in)
    settings = Settings.from_env(given)
    assert settings.kafka.sasl_password == "mounted secret"
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (5, 3)
    assert settings.bootstrap_servers == "b-1.msk.example:9096,b-2.msk.example:9096"
    kubernetes_validate.validate(hook, KUBERNETES_VERSION, strict=True)


def test_the_hook_uses_an_existing_service_account() -> None:
    values = {
        "kafka": {"topics": {"create": True}},
        "serviceAccount": {"create": False, "name": "sa"},
    }
    pod = job(render(values), "topics")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "sa"


def test_min_insync_above_the_replication_factor_fails_the_render() -> None:
    values = {"kafka": {"topics": {"replicationFactor": 2, "minInsyncReplicas": 3}}}
    with pytest.raises(Exception, match=r"kafka\.topics\.minInsyncReplicas=3 is above"):
        render(values)


@pytest.mark.parametrize(
    "kafka",
    [
        pytest.param({"security": {"protocol": "SASL_SSL"}}, id="sasl-without-anything"),
        pytest.param(
            {
                "security": {
                    "protocol": "SASL_SSL",
                    "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u"},
                }
            },
            id="sasl-without-secret",
        ),
        pytest.param(
            {
                "security": {
                    "protocol": "SASL_PLAINTEXT",
                    "sasl": {"username": "u", "existingSecret": "s"},
                }
            },
            id="sasl-without-mechanism",
        ),
        pytest.param(
            {
                "security": {
                    "protocol": "SASL_SSL",
                    "sasl": {"mechanism": "GSSAPI", "username": "u", "existingSecret": "s"},
                }
            },
            id="unknown-mechanism",
        ),
        pytest.param({"security": {"protocol": "TLS"}}, id="unknown-protocol"),
        pytest.param(
            {"security": {"sasl": {"mechanism": "PLAIN", "username": "u", "existingSecret": "s"}}},
            id="sasl-settings-on-plaintext",
        ),
        pytest.param(
            {
                "security": {
                    "protocol": "SASL_PLAINTEXT",
                    "tls": {"existingSecret": "ca"},
                    "sasl": {"mechanism": "PLAIN", "username": "u", "existingSecret": "s"},
                }
            },
            id="tls-secret-without-tls",
        ),
        pytest.param(
            {"security": {"protocol": "SSL", "tls": {"existingSecret": "t", "certKey": "tls.crt"}}},
            id="certificate-without-key",
        ),
        pytest.param(
            {"security": {"protocol": "SSL", "tls": {"certKey": "tls.crt", "keyKey": "tls.key"}}},
            id="client-certificate-without-secret",
        ),
        pytest.param({"security": {"sasl": {"password": "inline"}}}, id="inline-password"),
        pytest.param({"bootstrap": "kafka"}, id="bootstrap-without-port"),
        pytest.param({"bootstrap": []}, id="empty-bootstrap-list"),
        pytest.param({"bootstrap": "a:1;b:2"}, id="bootstrap-semicolons"),
        pytest.param({"topics": {"replicationFactor": 0}}, id="replication-0"),
        pytest.param({"topics": {"minInsyncReplicas": "2"}}, id="min-insync-string"),
    ],
)
def test_schema_rejects_bad_kafka_values(kafka: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"kafka": kafka})


@pytest.mark.parametrize(
    "name",
    [
        "CONVSTREAM_BROKER",
        "CONVSTREAM_KAFKA_SASL_PASSWORD",
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL",
        "CONVSTREAM_TOPIC_REPLICATION_FACTOR",
    ],
)
def test_kafka_settings_cannot_go_through_config(name: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"config": {name: "x"}})


@pytest.mark.parametrize("values", [SASL_SSL_SCRAM, MTLS, {}], ids=["sasl_ssl", "mtls", "plain"])
def test_the_schema_accepts_each_mode(values: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(with_everything(values))
