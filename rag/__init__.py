"""rag: index documents and retrieve the passages a person may read. Never imports portal or litestar.

Plain data in, plain data out (``rag.types``); the library knows filters, not users.

Parsing and chunking
    ``rag.parse.parse_document(data, filename, limits) -> ParsedDocument`` decides the format by
    content (PDF, DOCX, HTML, Markdown, text) and raises ``rag.errors.DocumentRejected(filename,
    reason)`` for encrypted/malformed/truncated PDFs, zip bombs, empty, binary or over-size files.
    ``rag.chunk.chunk_document(parsed, document_id, collection_id, document_version,
    tokenizer_counter, max_tokens, overlap_tokens) -> list[Chunk]``: structure-aware, bounded by
    the embedding model's tokenizer, ids ``document_id:ordinal:content_hash``.

Embedding
    ``rag.embed.load_embedder(EmbedderConfig) -> Embedder`` (``dim``, ``model_name``,
    ``max_seq_length``, ``max_chunk_tokens``, ``count_tokens``, ``embed_documents``/``embed_query``
    and the async ``aembed_documents``/``aembed_query`` that run in a thread). Backends: a local
    sentence-transformers directory (default all-MiniLM-L6-v2) or an OpenAI-compatible
    ``/v1/embeddings``. ``rag.embed.load_reranker(path)`` loads an optional cross-encoder.
    ``rag.sparse.Bm25Encoder`` makes the BM25 term-frequency vectors (Qdrant applies the IDF).

Vector store
    ``rag.store.open_store(StoreConfig) -> VectorStore``: ``url=None`` opens the embedded Qdrant
    Edge shard at ``path``; a URL opens a Qdrant server (``backend="qdrant-local"`` runs the same
    code on qdrant-client's local mode). Async methods: ``ensure_ready``, ``ping`` (raises when
    unusable), ``upsert(chunks, dense, sparse)``, ``search(access, limit, dense=, sparse=)``,
    ``delete_document(document_id, keep_version=None)``, ``delete_document_version``,
    ``delete_chunks``, ``delete_collection``, ``count(collection_id=, document_id=,
    document_version=)`` (exact), ``chunk_ids``, ``optimize``, ``close``.
    Every search takes an ``AccessFilter``; without one it raises ``AccessFilterRequired``, and an
    empty set of collections returns nothing.

Atomic replace (done by the portal)
    Index the new version (its points have their own ids, so the old version stays searchable),
    make it current in the database, then ``delete_document(document_id, keep_version=new)``;
    drop any hit whose ``document_version`` is not current in between.

Ingest and retrieval
    ``rag.ingest.index_document(data, filename, document_id, collection_id, document_version,
    embedder, store, limits=, chunking=, progress=)``: parse, chunk, embed, upsert; progress is
    ``(stage, fraction)``; on any failure the store is exactly as before.
    ``rag.ingest.store_chunks`` is the embed-and-upsert half for callers that chunk themselves.
    ``rag.retrieve.Retriever(embedder, store, reranker=None).search(query, access, top_k=10,
    mode="hybrid"|"dense"|"sparse") -> list[SearchHit]``; fusion is in ``rag.fusion``.

Evaluation
    ``rag.eval.run_eval`` (behind ``enclave eval DATASET_DIR``) indexes a BEIR-layout dataset
    through this pipeline and reports nDCG@10, Recall@100 and MRR@10 per mode.
"""
