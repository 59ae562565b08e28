"""The vLLM hardware profiles: their memory arithmetic is recomputed, and their files agree with each other."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import DEPLOY, K8S, PROFILES, read_env_file

GIB = 2**30
# Architecture of each model family (the models' config.json: num_hidden_layers,
# num_key_value_heads, head_dim or hidden_size / num_attention_heads).
ARCHITECTURES = {
    "Qwen2.5-7B": {"layers": 28, "kv_heads": 4, "head_dim": 128},
    "Llama-3.1-8B": {"layers": 32, "kv_heads": 8, "head_dim": 128},
    "Mistral-Nemo-12B": {"layers": 40, "kv_heads": 8, "head_dim": 128},
    "Llama-3.3-70B": {"layers": 80, "kv_heads": 8, "head_dim": 128},
}
PROFILE_FILES = sorted(PROFILES.glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    profile: dict[str, Any] = yaml.safe_load(path.read_text())
    return profile


def recompute(profile: dict[str, Any]) -> dict[str, float | int]:
    """Everything derived in a profile, from its inputs alone."""
    card, model, vllm, memory = profile["card"], profile["model"], profile["vllm"], profile["memory"]
    weights = model["weights"]
    weight_bytes = (
        weights["quantized_params_b"] * 1e9 * weights["bytes_per_quantized_param"]
        + weights["unquantized_params_b"] * 1e9 * 2
    )
    arch = model["architecture"]
    tp = vllm["tensor_parallel_size"]
    kv_bytes_per_token = 2 * arch["layers"] * arch["kv_heads"] * arch["head_dim"] * vllm["kv_cache_dtype_bytes"]
    kv_cache_gib = (
        card["memory_gib_per_gpu"] * vllm["gpu_memory_utilization"]
        - weights["weights_gib"] / tp
        - memory["non_kv_overhead_gib"]
    )
    kv_tokens = math.floor(kv_cache_gib * GIB / (kv_bytes_per_token // tp))
    return {
        "weights_gib": weight_bytes / GIB,
        "kv_bytes_per_token": kv_bytes_per_token,
        "kv_bytes_per_token_per_gpu": kv_bytes_per_token // tp,
        "kv_cache_gib_per_gpu": kv_cache_gib,
        "kv_cache_tokens": kv_tokens,
        "full_context_sequences": kv_tokens // vllm["max_model_len"],
        "concurrent_typical_requests": kv_tokens // memory["typical_request_tokens"],
    }


def test_there_are_profiles_for_8_24_and_80_gb_cards() -> None:
    names = {load(path)["name"] for path in PROFILE_FILES}
    assert {"8gb", "24gb", "80gb"} <= names
    eight = load(PROFILES / "8gb.yaml")
    assert eight["model"]["weights"]["bytes_per_quantized_param"] < 0.6, "8 GB needs a 4-bit model"
    assert (
        7 <= eight["model"]["weights"]["quantized_params_b"] + eight["model"]["weights"]["unquantized_params_b"] <= 12
    )


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_architecture_is_the_model_familys(path: Path) -> None:
    model = load(path)["model"]
    assert model["architecture"] == ARCHITECTURES[model["family"]]


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_memory_arithmetic_is_consistent(path: Path) -> None:
    profile = load(path)
    stated = {**profile["memory"], "weights_gib": profile["model"]["weights"]["weights_gib"]}
    derived = recompute(profile)
    assert stated["weights_gib"] == pytest.approx(derived["weights_gib"], abs=0.01)
    assert stated["kv_cache_gib_per_gpu"] == pytest.approx(derived["kv_cache_gib_per_gpu"], abs=0.01)
    for key in (
        "kv_bytes_per_token",
        "kv_bytes_per_token_per_gpu",
        "kv_cache_tokens",
        "full_context_sequences",
        "concurrent_typical_requests",
    ):
        assert stated[key] == derived[key], key


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_the_model_fits_the_card(path: Path) -> None:
    profile = load(path)
    card, vllm, memory = profile["card"], profile["vllm"], profile["memory"]
    budget = card["memory_gib_per_gpu"] * vllm["gpu_memory_utilization"]
    weights_per_gpu = profile["model"]["weights"]["weights_gib"] / vllm["tensor_parallel_size"]
    assert weights_per_gpu + memory["non_kv_overhead_gib"] < budget
    assert 0.5 <= vllm["gpu_memory_utilization"] <= 0.95
    assert card["gpus"] == vllm["tensor_parallel_size"]
    derived = recompute(profile)
    # At least one conversation at the full context length fits, or vLLM refuses to start.
    assert derived["full_context_sequences"] >= 1
    assert vllm["max_num_seqs"] <= derived["kv_cache_tokens"] // 1024


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_env_file_runs_what_the_arithmetic_assumes(path: Path) -> None:
    profile = load(path)
    vllm = profile["vllm"]
    env = read_env_file(PROFILES / vllm["env_file"])
    args = shlex.split(env["VLLM_ARGS"])
    flags = {args[i]: args[i + 1] for i in range(0, len(args), 2)}
    assert int(flags["--max-model-len"]) == vllm["max_model_len"]
    assert int(flags["--max-num-seqs"]) == vllm["max_num_seqs"]
    assert float(flags["--gpu-memory-utilization"]) == vllm["gpu_memory_utilization"]
    assert int(flags["--tensor-parallel-size"]) == vllm["tensor_parallel_size"]
    assert flags["--quantization"] == profile["model"]["quantization"]
    assert flags.get("--kv-cache-dtype", "auto") == "auto" and vllm["kv_cache_dtype_bytes"] == 2
    assert Path(env["VLLM_MODEL"]).parent == Path("/models")
    assert Path(env["VLLM_MODEL"]).name == profile["model"]["hf_repo"].split("/")[1]
    assert env["VLLM_SERVED_MODEL_NAME"] == "enclave-llm"
    assert int(env["ENCLAVE_LLM_CONTEXT_WINDOW"]) == vllm["max_model_len"]
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1"


def test_every_env_file_has_its_arithmetic() -> None:
    envs = {path.name for path in PROFILES.glob("*.env")}
    assert envs == {load(path)["vllm"]["env_file"] for path in PROFILE_FILES}


@pytest.mark.parametrize(
    "deployed",
    [
        DEPLOY / "compose" / "vllm.env",
        K8S / "overlays" / "single-site" / "vllm.env",
        K8S / "overlays" / "large-cluster" / "vllm.env",
    ],
    ids=["compose", "single-site", "large-cluster"],
)
def test_deployed_vllm_env_is_a_profile_unchanged(deployed: Path) -> None:
    header = deployed.read_text().splitlines()[0]
    name = re.match(r"# vLLM profile (\S+):", header)
    assert name, header
    assert deployed.read_text() == (PROFILES / f"{name.group(1)}.env").read_text()


def test_readme_table_matches_the_profiles() -> None:
    rows = {}
    for line in (PROFILES / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and re.fullmatch(r"`[\w]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    for path in PROFILE_FILES:
        profile = load(path)
        derived = recompute(profile)
        row = rows[profile["name"]]
        vllm = profile["vllm"]
        expected = [
            f"`{profile['model']['hf_repo']}`",
            profile["model"]["quantization"],
            str(profile["model"]["weights"]["weights_gib"]),
            str(vllm["max_model_len"]),
            str(vllm["max_num_seqs"]),
            f"{vllm['gpu_memory_utilization']:.2f}",
            str(derived["kv_bytes_per_token"]),
            str(profile["memory"]["kv_cache_gib_per_gpu"]),
            str(derived["kv_cache_tokens"]),
            str(derived["full_context_sequences"]),
            str(derived["concurrent_typical_requests"]),
        ]
        assert row[2:] == expected, profile["name"]
