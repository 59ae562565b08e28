"""Fixtures for the rag library: the real embedding model (once per session) and both store backends."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rag.embed import Embedder, load_embedder
from rag.store import StoreConfig, VectorStore, open_store

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The same store suite runs on both: the embedded Qdrant Edge shard and the qdrant-client code
# path used against a Qdrant server (here on qdrant-client's local mode, as no server runs).
STORE_BACKENDS = ["edge", "qdrant-local"]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder()


async def open_test_store(backend: str, path: Path, dim: int) -> VectorStore:
    config = StoreConfig(path=str(path), dim=dim, backend=backend)  # type: ignore[arg-type]
    store = open_store(config)
    await store.ensure_ready()
    return store


@pytest.fixture(params=STORE_BACKENDS)
async def small_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    """A store for 4-dimensional synthetic vectors: exercises the store without the model."""
    store = await open_test_store(request.param, tmp_path / "vectors", dim=4)
    yield store
    await store.close()


@pytest.fixture(params=STORE_BACKENDS)
async def model_store(request: pytest.FixtureRequest, tmp_path: Path, embedder: Embedder) -> AsyncIterator[VectorStore]:
    store = await open_test_store(request.param, tmp_path / "vectors", dim=embedder.dim)
    yield store
    await store.close()
