"""scripts/build-wheelhouse: the images list it writes is every image the deployments use, and nothing else."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .conftest import DEPLOY, K8S, pod_spec, run_compose_config

SCRIPT = DEPLOY.parent / "scripts" / "build-wheelhouse"


def normalise(image: str) -> str:
    return re.sub(r"^(docker\.io/)?(library/)?", "", image)


def images_txt(tmp_path: Path) -> list[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--images-only", str(tmp_path / "wheelhouse")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return (tmp_path / "wheelhouse" / "images.txt").read_text().splitlines()


def test_images_txt_lists_what_compose_and_kubernetes_run(
    tmp_path: Path, compose: list[str], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    listed = images_txt(tmp_path)
    assert listed == sorted(set(listed))

    result = run_compose_config(compose, DEPLOY / "compose" / ".env.example", "--images")
    assert result.returncode == 0, result.stderr
    used = set(result.stdout.split())
    for docs in rendered.values():
        for doc in docs:
            if doc["kind"] in {"Deployment", "StatefulSet", "Job", "CronJob"}:
                spec = pod_spec(doc)
                used |= {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
    values = yaml.safe_load((K8S / "qdrant-values.yaml").read_text())
    used.add(f"{values['image']['repository']}:{values['image']['tag']}")
    # The portal image is built on site from deploy/Dockerfile; its base image is pulled.
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert base
    used.add(base.group(1))
    expected = {normalise(image) for image in used if not image.startswith("enclave/portal")}

    assert set(listed) == expected
    for image in listed:
        assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*", image), f"{image} is not pinned"


def test_help_names_the_offline_install() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--images-only" in result.stdout
    assert "pip install --no-index --find-links" in SCRIPT.read_text()


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--bogus", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert not (tmp_path / "images.txt").exists()


def test_dockerfile_installs_from_the_wheelhouse_alone() -> None:
    # No Docker engine here to build the image; these are the lines an air-gapped build depends on.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG WHEELHOUSE=$", dockerfile, re.MULTILINE)
    assert 'pip install --no-index --find-links "/src/$WHEELHOUSE" enclave' in dockerfile
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.-]*-slim", dockerfile, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["enclave"\]$', dockerfile, re.MULTILINE)
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and "wheelhouse" not in ignored
