"""The Compose stack and the Kubernetes overlays, rendered by the real tools and checked for what a site relies on."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .conftest import (
    ALL_OVERLAYS,
    COMPOSE_ENV_EXAMPLE,
    DEPLOY,
    K8S,
    OVERLAYS,
    PROFILES,
    find,
    generated,
    one,
    pod_spec,
    read_env_file,
    run_compose_config,
)

# The settings the portal reads in production (issue 8); each must reach the portal containers.
PORTAL_SETTINGS = {
    "ENCLAVE_MODE",
    "ENCLAVE_SECRET_KEY",
    "ENCLAVE_DATABASE_URL",
    "ENCLAVE_QDRANT_URL",
    "ENCLAVE_QDRANT_API_KEY",
    "ENCLAVE_REDIS_URL",
    "ENCLAVE_LLM_BASE_URL",
    "ENCLAVE_LLM_MODEL",
    "ENCLAVE_LLM_API_KEY",
    "ENCLAVE_INTERNAL_HOSTS",
    "ENCLAVE_OIDC_PROVIDERS",
    "ENCLAVE_SCIM_TOKEN",
    "ENCLAVE_DATA_DIR",
    "ENCLAVE_PUBLIC_URL",
    "ENCLAVE_EMBEDDED_LLM",
    "ENCLAVE_EMBEDDED_IDP",
    # Not in the list, but a container needs them: the settings default to 127.0.0.1 and an 8k window.
    "ENCLAVE_HOST",
    "ENCLAVE_LLM_CONTEXT_WINDOW",
}
PORTAL_SERVICES = {"portal", "worker", "purge", "migrate"}
# Kubernetes release the rendered manifests are checked against (kubectl here is 1.32).
K8S_VERSION = "1.32.0"


# --- Docker Compose -------------------------------------------------------------------------------


def test_only_the_proxy_publishes_ports(compose_config: dict[str, Any]) -> None:
    publishing = {name for name, service in compose_config["services"].items() if service.get("ports")}
    assert publishing == {"proxy"}
    published = {str(port["published"]) for port in compose_config["services"]["proxy"]["ports"]}
    assert "443" in published


def test_backend_network_has_no_route_out(compose_config: dict[str, Any]) -> None:
    networks = compose_config["networks"]
    assert networks["backend"].get("internal") is True
    services = compose_config["services"]
    # Only the proxy is on the network with published ports; only the web portal may reach the IdP.
    on_edge = {name for name, service in services.items() if "edge" in service["networks"]}
    assert on_edge == {"proxy"}
    outside_backend = {name for name, service in services.items() if set(service["networks"]) - {"backend"}}
    assert outside_backend == {"proxy", "portal"}
    for name in ("postgres", "qdrant", "redis", "vllm", "worker", "purge", "migrate"):
        assert set(services[name]["networks"]) == {"backend"}, name


@pytest.mark.parametrize(
    ("service", "target"),
    [
        ("postgres", "/var/lib/postgresql/data"),
        ("qdrant", "/qdrant/storage"),
        ("qdrant", "/qdrant/snapshots"),
        ("redis", "/data"),
        ("portal", "/var/lib/enclave"),
        ("worker", "/var/lib/enclave"),
        ("purge", "/var/lib/enclave"),
        ("proxy", "/data"),
    ],
)
def test_state_lives_on_named_volumes(compose_config: dict[str, Any], service: str, target: str) -> None:
    mounts = [m for m in compose_config["services"][service]["volumes"] if m["target"] == target]
    assert len(mounts) == 1, f"{service} mounts nothing at {target}"
    assert mounts[0]["type"] == "volume", f"{service}:{target} is not a named volume"
    assert mounts[0]["source"] in compose_config["volumes"]


def test_web_worker_and_purge_share_one_data_volume(compose_config: dict[str, Any]) -> None:
    sources = {
        m["source"]
        for name in ("portal", "worker", "purge")
        for m in compose_config["services"][name]["volumes"]
        if m["target"] == "/var/lib/enclave"
    }
    assert len(sources) == 1


def test_portal_healthcheck_hits_readyz_and_gates_the_proxy(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert "/readyz" in " ".join(services["portal"]["healthcheck"]["test"])
    assert services["proxy"]["depends_on"]["portal"]["condition"] == "service_healthy"
    for name in ("postgres", "qdrant", "redis", "vllm"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_migration_runs_before_web_worker_and_purge(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("portal", "worker", "purge"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["portal"]["command"] == ["web"]
    assert services["worker"]["command"] == ["worker"]
    assert "enclave purge" in " ".join(services["purge"]["command"])
    # Indexing runs in the worker service only.
    assert services["portal"]["environment"]["ENCLAVE_WORKERS"] == "0"
    assert services["worker"]["environment"].get("ENCLAVE_WORKERS") != "0"


def test_portal_services_get_every_setting(compose_config: dict[str, Any]) -> None:
    example = COMPOSE_ENV_EXAMPLE.read_text()
    for name in PORTAL_SERVICES:
        environment = compose_config["services"][name]["environment"]
        assert PORTAL_SETTINGS <= set(environment), name
        assert environment["ENCLAVE_MODE"] == "production"
        assert environment["ENCLAVE_EMBEDDED_LLM"] == "false"
        assert environment["ENCLAVE_EMBEDDED_IDP"] == "false"
        assert environment["ENCLAVE_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert environment["ENCLAVE_LLM_BASE_URL"] == "http://vllm:8000/v1"
        assert environment["ENCLAVE_HOST"] == "0.0.0.0"
        # The portal budgets prompts to the window vLLM serves.
        vllm_args = shlex.split(read_env_file(DEPLOY / "compose" / "vllm.env")["VLLM_ARGS"])
        assert environment["ENCLAVE_LLM_CONTEXT_WINDOW"] == arg_value(vllm_args, "--max-model-len")
        # Every host the portal reaches over plain http is declared internal.
        internal = set(environment["ENCLAVE_INTERNAL_HOSTS"].split(","))
        assert {"vllm", "qdrant"} <= internal
        providers = json.loads(environment["ENCLAVE_OIDC_PROVIDERS"])
        assert {"name", "label", "discovery_url", "client_id", "client_secret"} <= set(providers[0])
        # .env.example names every ENCLAVE_ setting the services receive.
        for key in environment:
            if key.startswith("ENCLAVE_"):
                assert re.search(rf"^#? ?{key}=", example, re.MULTILINE), f"{key} missing from .env.example"


def test_a_missing_secret_stops_the_stack(compose: list[str], tmp_path: Path) -> None:
    lines = COMPOSE_ENV_EXAMPLE.read_text().splitlines()
    env_file = tmp_path / "incomplete.env"
    env_file.write_text("\n".join(line for line in lines if not line.startswith("ENCLAVE_SECRET_KEY=")))
    result = run_compose_config(compose, env_file, "--quiet")
    assert result.returncode != 0
    assert "ENCLAVE_SECRET_KEY" in result.stderr


def test_vllm_gets_a_gpu_and_its_profile(compose_config: dict[str, Any]) -> None:
    vllm = compose_config["services"]["vllm"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)
    profile = read_env_file(DEPLOY / "compose" / "vllm.env")
    for key in ("VLLM_MODEL", "VLLM_SERVED_MODEL_NAME", "VLLM_ARGS"):
        assert vllm["environment"][key] == profile[key]
    served = vllm["environment"]["VLLM_SERVED_MODEL_NAME"]
    assert compose_config["services"]["portal"]["environment"]["ENCLAVE_LLM_MODEL"] == served
    # No hub access and no usage reports from inside the building.
    assert vllm["environment"]["HF_HUB_OFFLINE"] == "1"
    assert vllm["environment"]["VLLM_NO_USAGE_STATS"] == "1"
    assert compose_config["services"]["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"


def test_compose_images_are_pinned(compose_config: dict[str, Any]) -> None:
    for name, service in compose_config["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_caddyfile_terminates_tls_and_proxies_to_the_portal(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("needs the caddy binary (Debian package `caddy`) to parse the Caddyfile")
    result = subprocess.run(
        [caddy, "adapt", "--config", str(DEPLOY / "compose" / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"ENCLAVE_HOSTNAME": "enclave.example.org", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    text = json.dumps(config)
    assert '"dial": "portal:8000"' in text
    assert "/certs/tls.crt" in text and "/certs/tls.key" in text
    assert "enclave.example.org" in text
    assert config["admin"]["disabled"] is True


# --- Kubernetes ------------------------------------------------------------------------------------


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in {"Deployment", "StatefulSet", "Job", "CronJob"}]


def enclave_workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        doc
        for doc in workloads(docs)
        if any(c["image"].startswith("enclave/portal") for c in pod_spec(doc)["containers"])
    ]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_resource_passes_the_kubernetes_schema(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    assert K8S_VERSION.rsplit(".", 1)[0] in {
        v.lstrip("v").rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()
    }
    for doc in rendered[overlay]:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"].get("namespace") == "enclave", doc["metadata"]


def test_the_schema_check_rejects_a_broken_manifest(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(one(rendered["single-site"], "Deployment", "enclave-portal"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    deployment = copy.deepcopy(one(rendered["single-site"], "Deployment", "enclave-portal"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def egress_peer_is_inside(peer: dict[str, Any]) -> bool:
    """In the namespace, in the cluster, or an address range inside the organisation."""
    if "ipBlock" in peer:
        return ipaddress.ip_network(peer["ipBlock"]["cidr"]).is_private
    return "podSelector" in peer or "namespaceSelector" in peer


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_network_policies_deny_egress_by_default(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    policies = find(rendered[overlay], "NetworkPolicy")
    deny_all = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {} and "Egress" in p["spec"]["policyTypes"] and not p["spec"].get("egress")
    ]
    assert deny_all, "no NetworkPolicy denies egress to every pod"
    # The namespace-wide allowances are exactly: pods of this namespace, and the cluster DNS.
    namespace_wide = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"].get("egress")]
    allowed = [peer for p in namespace_wide for rule in p["spec"]["egress"] for peer in rule["to"]]
    assert {"podSelector": {}} in allowed
    dns = [peer for peer in allowed if peer != {"podSelector": {}}]
    assert dns == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    # No policy anywhere opens a route out of the building.
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']} allows egress to everywhere"
            for peer in rule["to"]:
                assert egress_peer_is_inside(peer), f"{policy['metadata']['name']}: {peer}"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_purge_is_a_cronjob_running_enclave_purge(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    cronjob = one(rendered[overlay], "CronJob", "enclave-purge")
    container = pod_spec(cronjob)["containers"][0]
    assert container["image"].startswith("enclave/portal:")
    assert container["args"] == ["purge"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_migration_job_runs_before_the_app_phase(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    job = one(docs, "Job", "enclave-migrate")
    assert pod_spec(job)["containers"][0]["args"] == ["db", "upgrade"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # rollout.sh applies `enclave.io/rollout-phase!=app` first: the Job and everything it needs
    # (settings, Secrets, datastores) must be outside the app phase, the app itself inside it.
    phase = {
        (d["kind"], d["metadata"]["name"]): d["metadata"].get("labels", {}).get("enclave.io/rollout-phase")
        for d in docs
    }
    assert phase[("Job", "enclave-migrate")] is None
    for kind, name in [
        ("Deployment", "enclave-portal"),
        ("Deployment", "enclave-worker"),
        ("CronJob", "enclave-purge"),
        ("HorizontalPodAutoscaler", "enclave-portal"),
        ("HorizontalPodAutoscaler", "enclave-worker"),
    ]:
        assert phase[(kind, name)] == "app", (kind, name)
    app_phase = {key for key, value in phase.items() if value == "app"}
    assert all(kind not in {"Secret", "ConfigMap", "StatefulSet", "Job"} for kind, _ in app_phase)


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_hpas_scale_the_portal_and_the_workers(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    hpas = find(docs, "HorizontalPodAutoscaler")
    targets = {(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]) for h in hpas}
    assert targets == {("Deployment", "enclave-portal"), ("Deployment", "enclave-worker")}
    for hpa in hpas:
        one(docs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert one(docs, "Deployment", "enclave-worker")["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]


def vllm_args(docs: list[dict[str, Any]]) -> list[str]:
    return shlex.split(generated(docs, "ConfigMap", "vllm-config")["data"]["VLLM_ARGS"])


def arg_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_vllm_requests_as_many_gpus_as_its_tensor_parallel_size(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    vllm = one(docs, "Deployment", "vllm")
    container = pod_spec(vllm)["containers"][0]
    tensor_parallel = int(arg_value(vllm_args(docs), "--tensor-parallel-size"))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == tensor_parallel
    assert container["resources"]["requests"]["nvidia.com/gpu"] == tensor_parallel
    assert "$VLLM_ARGS" in " ".join(container["args"])
    one(docs, "Service", "vllm")
    # The overlay's vllm.env is one of the shipped profiles, unchanged.
    overlay_env = (K8S / "overlays" / overlay / "vllm.env").read_text()
    assert overlay_env in {path.read_text() for path in PROFILES.glob("*.env")}
    config = generated(docs, "ConfigMap", "enclave-config")["data"]
    assert config["ENCLAVE_LLM_BASE_URL"] == "http://vllm:8000/v1"
    assert config["ENCLAVE_HOST"] == "0.0.0.0"
    window = generated(docs, "ConfigMap", "vllm-config")["data"]["ENCLAVE_LLM_CONTEXT_WINDOW"]
    assert window == arg_value(vllm_args(docs), "--max-model-len")
    assert (
        config["ENCLAVE_LLM_MODEL"] == read_env_file(K8S / "overlays" / overlay / "vllm.env")["VLLM_SERVED_MODEL_NAME"]
    )


def test_an_existing_vllm_endpoint_replaces_the_bundled_one(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["large-cluster+external-vllm+idp-egress"]
    assert not find(docs, "Deployment", "vllm")
    assert not find(docs, "Service", "vllm")
    config = generated(docs, "ConfigMap", "enclave-config")["data"]
    host = config["ENCLAVE_LLM_BASE_URL"].split("//")[1].split(":")[0]
    assert host != "vllm"
    assert host in config["ENCLAVE_INTERNAL_HOSTS"].split(",")
    # The portal containers read the merged settings (the reference follows the new hash).
    for workload in enclave_workloads(docs):
        refs = [
            e["configMapRef"]["name"] for e in pod_spec(workload)["containers"][0]["envFrom"] if "configMapRef" in e
        ]
        assert generated(docs, "ConfigMap", "enclave-config")["metadata"]["name"] in refs


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_portal_probes_and_non_root_security(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    portal = pod_spec(one(docs, "Deployment", "enclave-portal"))["containers"][0]
    assert portal["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert portal["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert portal["args"] == ["web"]
    assert {"name": "ENCLAVE_WORKERS", "value": "0"} in portal["env"]
    portal_workloads = enclave_workloads(docs)
    assert {w["metadata"]["name"] for w in portal_workloads} == {
        "enclave-portal",
        "enclave-worker",
        "enclave-migrate",
        "enclave-purge",
    }
    for workload in portal_workloads:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def container_env_sources(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """Every variable a container receives, with where it comes from (value, or secret/configmap)."""
    names: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
            names.update({key: f"configmap {source['configMapRef']['name']}" for key in data})
        if "secretRef" in source:
            data = one(docs, "Secret", source["secretRef"]["name"])["data"]
            names.update({key: f"secret {source['secretRef']['name']}" for key in data})
    for variable in container.get("env", []):
        if "valueFrom" in variable:
            ref = variable["valueFrom"]["secretKeyRef"]
            secret = one(docs, "Secret", ref["name"])
            assert ref["key"] in secret["data"], ref
            names[variable["name"]] = f"secret {ref['name']}"
        else:
            names[variable["name"]] = variable["value"]
    return names


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_portal_container_gets_every_setting(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    for workload in enclave_workloads(docs):
        container = pod_spec(workload)["containers"][0]
        env = container_env_sources(docs, container)
        missing = PORTAL_SETTINGS - set(env)
        assert not missing, f"{workload['metadata']['name']} lacks {sorted(missing)}"
        # $(VAR) is expanded only from variables defined earlier in the list.
        defined: set[str] = set()
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            defined |= set(one(docs, kind, ref["name"])["data"])
        for variable in container.get("env", []):
            for used in re.findall(r"\$\((\w+)\)", variable.get("value", "")):
                assert used in defined, f"{variable['name']} uses $({used}) before it is defined"
            defined.add(variable["name"])


def test_single_site_bundles_postgres_and_redis(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["single-site"]
    for name, port in (("postgres", 5432), ("redis", 6379)):
        statefulset = one(docs, "StatefulSet", name)
        assert statefulset["spec"]["volumeClaimTemplates"], f"{name} keeps nothing"
        assert one(docs, "Service", name)["spec"]["ports"][0]["port"] == port
    portal = pod_spec(one(docs, "Deployment", "enclave-portal"))["containers"][0]
    urls = {v["name"]: v.get("value", "") for v in portal["env"]}
    assert urls["ENCLAVE_DATABASE_URL"].startswith("postgresql+asyncpg://enclave:$(POSTGRES_PASSWORD)@postgres:5432/")
    assert urls["ENCLAVE_REDIS_URL"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
    assert one(docs, "PersistentVolumeClaim", "enclave-data")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_large_cluster_uses_external_datastores_over_tls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["large-cluster"]
    assert not find(docs, "StatefulSet")
    secret = generated(docs, "Secret", "enclave-secrets")["data"]
    database_url = base64.b64decode(secret["ENCLAVE_DATABASE_URL"]).decode()
    redis_url = base64.b64decode(secret["ENCLAVE_REDIS_URL"]).decode()
    assert database_url.startswith("postgresql+asyncpg://") and "ssl=verify-full" in database_url
    assert redis_url.startswith("rediss://")
    # The base secrets survive the merge.
    assert {"ENCLAVE_SECRET_KEY", "ENCLAVE_SCIM_TOKEN", "ENCLAVE_OIDC_PROVIDERS"} <= set(secret)
    assert one(docs, "NetworkPolicy", "allow-egress-to-datastores")
    assert one(docs, "PersistentVolumeClaim", "enclave-data")["spec"]["accessModes"] == ["ReadWriteMany"]
    portal_hpa = one(docs, "HorizontalPodAutoscaler", "enclave-portal")["spec"]
    single_site_hpa = one(rendered["single-site"], "HorizontalPodAutoscaler", "enclave-portal")["spec"]
    assert portal_hpa["maxReplicas"] > single_site_hpa["maxReplicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_the_keys_and_client_secrets(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    secret = generated(docs, "Secret", "enclave-secrets")["data"]
    decoded = {key: base64.b64decode(value).decode() for key, value in secret.items()}
    assert {"ENCLAVE_SECRET_KEY", "ENCLAVE_SCIM_TOKEN", "ENCLAVE_LLM_API_KEY", "ENCLAVE_OIDC_PROVIDERS"} <= set(decoded)
    providers = json.loads(decoded["ENCLAVE_OIDC_PROVIDERS"])
    assert all(provider["client_secret"] for provider in providers)
    # Nothing secret sits in the plain ConfigMap.
    config = generated(docs, "ConfigMap", "enclave-config")["data"]
    assert not {key for key in config if re.search("SECRET|TOKEN|KEY|PASSWORD|DATABASE_URL", key)}
    qdrant = one(docs, "Secret", "enclave-qdrant")
    assert "QDRANT__SERVICE__API_KEY" in qdrant["data"]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_kubernetes_images_are_pinned(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for workload in workloads(rendered[overlay]):
        spec = pod_spec(workload)
        for container in spec["containers"] + spec.get("initContainers", []):
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image), f"{image} is not pinned"


def test_qdrant_values_run_a_replicated_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    values = yaml.safe_load((K8S / "qdrant-values.yaml").read_text())
    assert values["config"]["cluster"]["enabled"] is True
    collection = values["config"]["storage"]["collection"]
    assert values["replicaCount"] >= 3
    assert 2 <= collection["replication_factor"] <= values["replicaCount"]
    assert collection["shard_number_per_node"] >= 1
    assert collection["write_consistency_factor"] <= collection["replication_factor"]
    assert values["config"]["telemetry_disabled"] is True
    assert values["persistence"]["size"]
    assert values["resources"]["requests"] and values["resources"]["limits"]
    # The API key comes from the Secret the base generates, under its exact (unhashed) name.
    (api_key,) = [v for v in values["env"] if v["name"] == "QDRANT__SERVICE__API_KEY"]
    ref = api_key["valueFrom"]["secretKeyRef"]
    assert "QDRANT__SERVICE__API_KEY" in one(rendered["large-cluster"], "Secret", ref["name"])["data"]
    # The same Qdrant release as the Compose stack.
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    assert compose["services"]["qdrant"]["image"] == "qdrant/qdrant:" + values["image"]["tag"]
    # ENCLAVE_QDRANT_URL names the Service the release `qdrant` creates.
    config = generated(rendered["large-cluster"], "ConfigMap", "enclave-config")["data"]
    assert config["ENCLAVE_QDRANT_URL"] == "http://qdrant:6333"


# --- rollout.sh ------------------------------------------------------------------------------------

FAKE_KUBECTL = """#!/usr/bin/env bash
echo "$*" >> "$KUBECTL_LOG"
case "$*" in
  *"get job enclave-migrate"*"succeeded"*) printf '%s' "${MIGRATION_SUCCEEDED-1}" ;;
  *"get job enclave-migrate"*"Failed"*) printf '%s' "${MIGRATION_FAILED:-}" ;;
esac
exit 0
"""


def run_rollout(
    k8s: Path, tmp_path: Path, overlay: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "kubectl"
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    log = tmp_path / "kubectl.log"
    log.write_text("")
    result = subprocess.run(
        ["bash", str(k8s / "rollout.sh"), str(k8s / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "KUBECTL_LOG": str(log), **env},
    )
    return result, log.read_text().splitlines()


def test_rollout_migrates_before_applying_the_app(k8s_copy: Path, tmp_path: Path) -> None:
    result, calls = run_rollout(k8s_copy, tmp_path, "single-site")
    assert result.returncode == 0, result.stderr
    overlay = str(k8s_copy / "overlays" / "single-site")
    order = [
        "-n enclave delete job enclave-migrate --ignore-not-found --wait=true",
        f"apply -k {overlay} -l enclave.io/rollout-phase!=app",
        f"apply -k {overlay}",
        "-n enclave rollout status deployment/enclave-portal --timeout=15m",
    ]
    positions = [calls.index(call) for call in order]
    assert positions == sorted(positions)
    first_app = calls.index(f"apply -k {overlay}")
    assert any("get job enclave-migrate" in call for call in calls[:first_app])


def test_rollout_stops_when_the_migration_fails(k8s_copy: Path, tmp_path: Path) -> None:
    result, calls = run_rollout(k8s_copy, tmp_path, "large-cluster", MIGRATION_SUCCEEDED="", MIGRATION_FAILED="True")
    assert result.returncode == 1
    assert "migration did not complete" in result.stderr
    overlay = str(k8s_copy / "overlays" / "large-cluster")
    assert f"apply -k {overlay}" not in calls


def test_rollout_refuses_placeholder_secrets(tmp_path: Path) -> None:
    result, calls = run_rollout(K8S, tmp_path, "single-site")
    assert result.returncode == 1
    assert "CHANGE-ME" in result.stderr
    assert calls == []


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("needs shellcheck (Debian package `shellcheck`)")
    scripts = [K8S / "rollout.sh", DEPLOY.parent / "scripts" / "build-wheelhouse"]
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
