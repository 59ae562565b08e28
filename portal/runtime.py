"""What one portal process holds for its lifetime: settings, database, vector store, embedder and LLM endpoint.

Nothing here is shared state between requests beyond connection pools and loaded models: anything that must
be seen by several portal processes lives in the database or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from portal import heap
from portal.clock import Clock
from portal.db.engine import dispose_twin, make_engine, make_session_factory
from portal.logging import get_logger
from portal.settings import Settings
from rag.embed import Embedder
from rag.store import VectorStore

log = get_logger(__name__)

# A loaded model is a read-only resource: apps created in one process (tests, benchmarks) share it.
_EMBEDDERS: dict[str, Any] = {}
_EMBEDDERS_LOCK = threading.Lock()


def _shared_embedder(config: Any, loader: Any, questions: bool = True) -> Any:
    """The process's embedder for `config`; with `questions`, its question path built now rather than on the first
    question (processes that only index documents never build it: ONNX Runtime's copy of the weights is ~130 MB)."""
    key = repr(config)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = loader(config)
        embedder = _EMBEDDERS[key]
        prepare = getattr(embedder, "prepare_query_path", None)
        if questions and prepare is not None:
            prepare()  # once: later calls find the path built
            log.info("embedding_query_path", path=getattr(embedder, "query_path", "eager"))
        return embedder


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    store: VectorStore | None = None
    embedder: Embedder | None = None
    embedder_error: str | None = None
    store_error: str | None = None
    jobs: Any = None  # the in-process indexing workers (portal.jobs.workers), when this process runs them
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    answers_questions: bool = True  # False in processes that only index documents (workers, the ingest command)

    @classmethod
    def create(cls, settings: Settings, *, answers_questions: bool = True) -> Runtime:
        engine = make_engine(settings.resolved_database_url, echo=settings.database_echo)
        return cls(settings=settings, engine=engine, db=make_session_factory(engine),
                   answers_questions=answers_questions)

    @property
    def clock(self) -> Clock:
        return self.settings.clock

    async def start(self) -> None:
        """Open the vector store now; load the embedding model in the background so /healthz answers at once."""
        await self._open_store()
        self._tasks.append(asyncio.create_task(self._load_embedder()))
        from portal.jobs.workers import start_job_workers

        self.jobs = await start_job_workers(self)
        if self.settings.purge_in_process:
            from portal.governance.scheduler import purge_scheduler_loop

            self._tasks.append(
                asyncio.create_task(purge_scheduler_loop(self, check_every_s=self.settings.purge_check_seconds))
            )

    async def _open_store(self) -> None:
        from rag.store import StoreConfig, open_store

        s = self.settings
        try:
            self.store = open_store(
                StoreConfig(
                    url=s.qdrant_url,
                    api_key=s.qdrant_api_key.get_secret_value() if s.qdrant_api_key else None,
                    path=str(s.vector_path),
                    collection_name=s.qdrant_collection,
                    dim=s.embedding_dim,
                )
            )
            await self.store.ensure_ready()
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the portal still serves pages
            self.store_error = type(exc).__name__
            log.error("vector_store_unavailable", error=type(exc).__name__)

    async def _load_embedder(self) -> None:
        from rag.embed import EmbedderConfig, load_embedder

        s = self.settings
        try:
            if s.embedding_endpoint:
                config = EmbedderConfig(
                    backend="openai",
                    base_url=s.embedding_endpoint,
                    model_name=s.embedding_endpoint_model,
                    tokenizer_path=str(s.embedding_model_path) if s.embedding_model_path else None,
                )
            else:
                config = EmbedderConfig(
                    model_path=str(s.embedding_model_path) if s.embedding_model_path else None,
                    query_onnx=s.embedding_query_onnx,
                    query_int8=s.embedding_query_int8,
                )
            embedder = await asyncio.to_thread(_shared_embedder, config, load_embedder, self.answers_questions)
            # The model and its libraries now live as long as the process: keep them out of full collections. Done
            # before the model is published, so this one long collection comes before readiness and first questions.
            heap.settle()
            self.embedder = embedder
        except Exception as exc:  # noqa: BLE001
            self.embedder_error = f"{type(exc).__name__}: {exc}"[:200]
            log.error("embedding_model_unavailable", error=type(exc).__name__)

    async def wait_for_embedder(self, timeout: float = 120.0) -> Embedder:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.embedder is None:
            if self.embedder_error or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"embedding model unavailable: {self.embedder_error or 'timed out'}")
            await asyncio.sleep(0.05)
        return self.embedder

    async def stop(self) -> None:
        if self.jobs is not None:
            await self.jobs.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        await self.engine.dispose()
        dispose_twin(self.engine)

    # Readiness -------------------------------------------------------------------------------------------
    async def check_database(self) -> str | None:
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=3)
        except Exception as exc:  # noqa: BLE001
            return f"unreachable ({type(exc).__name__})"
        return None

    async def check_vector_store(self) -> str | None:
        if self.store is None:
            return f"not open ({self.store_error or 'starting'})"
        try:
            await asyncio.wait_for(self.store.ping(), timeout=3)
        except Exception as exc:  # noqa: BLE001
            return f"unreachable ({type(exc).__name__})"
        return None

    async def check_embedder(self) -> str | None:
        if self.embedder is not None:
            return None
        return f"failed to load ({self.embedder_error})" if self.embedder_error else "loading"

    async def check_llm(self) -> str | None:
        url = self.settings.effective_llm_base_url.rstrip("/") + "/models"
        headers = {"Authorization": f"Bearer {self.settings.llm_api_key.get_secret_value()}"}
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})"
        if response.status_code != 200:
            return f"answered HTTP {response.status_code}"
        return None

    async def readiness(self) -> dict[str, str | None]:
        names = ("database", "vector_store", "embedding_model", "llm")
        results = await asyncio.gather(
            self.check_database(), self.check_vector_store(), self.check_embedder(), self.check_llm()
        )
        return dict(zip(names, results, strict=True))
