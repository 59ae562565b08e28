"""A disk cache in front of an embedder, keyed by model name and text, so evaluation reruns are fast.

Only evaluation and benchmarks use it: the portal always embeds for real.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence

import numpy as np

from rag.embed import Embedder, Vectors


def _key(model_name: str, text: str) -> str:
    return hashlib.sha256(f"{model_name}\x00{text}".encode()).hexdigest()[:32]


class CachedEmbedder:
    """Wraps an embedder; documents already embedded by the same model come from ``cache_dir``."""

    def __init__(self, inner: Embedder, cache_dir: str) -> None:
        self.inner = inner
        self._dir = os.path.join(cache_dir, inner.model_name)
        os.makedirs(self._dir, exist_ok=True)
        self._vectors: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        for name in sorted(os.listdir(self._dir)):
            if name.endswith(".npz"):
                with np.load(os.path.join(self._dir, name)) as part:
                    for key, vector in zip(part["keys"], part["vectors"], strict=True):
                        self._vectors[str(key)] = vector

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def max_seq_length(self) -> int:
        return self.inner.max_seq_length

    @property
    def max_chunk_tokens(self) -> int:
        return self.inner.max_chunk_tokens

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        keys = [_key(self.model_name, text) for text in texts]
        with self._lock:
            missing = [i for i, key in enumerate(keys) if key not in self._vectors]
        if missing:
            computed = self.inner.embed_documents([texts[i] for i in missing])
            with self._lock:
                for i, vector in zip(missing, computed, strict=True):
                    self._vectors[keys[i]] = vector
                    self._pending[keys[i]] = vector
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if len(self._pending) >= 1024:
            self.save()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[key] for key in keys]).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> Vectors:
        return self.inner.embed_query(text)

    async def aembed_documents(self, texts: Sequence[str]) -> Vectors:
        import asyncio

        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> Vectors:
        return await self.inner.aembed_query(text)

    def save(self) -> None:
        with self._lock:
            if not self._pending:
                return
            keys = np.array(list(self._pending))
            vectors = np.stack(list(self._pending.values())).astype(np.float32)
            self._pending = {}
        name = hashlib.sha256("".join(keys.tolist()).encode()).hexdigest()[:16]
        tmp = os.path.join(self._dir, f".{name}.tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, os.path.join(self._dir, f"{name}.npz"))
