"""`enclave eval DATASET_DIR`: retrieval quality of the real pipeline on a BEIR-layout dataset."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path

import click


@click.command("eval")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--filter-field",
    default=None,
    help="Query field naming the collection (corpus metadata field of the same name); "
    "evaluates with it as the access filter, and without.",
)
@click.option("--query-field", default="text", show_default=True, help="Query field holding the question text.")
@click.option(
    "--model-path",
    envvar="ENCLAVE_EMBEDDING_MODEL_PATH",
    default=None,
    help="Local sentence-transformers model directory (default: the packaged all-MiniLM-L6-v2).",
)
@click.option(
    "--reranker",
    "reranker_path",
    envvar="ENCLAVE_RERANKER_MODEL_PATH",
    default=None,
    help="Local cross-encoder directory; adds a 'reranked' mode.",
)
@click.option(
    "--cache-dir",
    default=".cache/embeddings",
    show_default=True,
    help="Where passage embeddings are cached between runs (keyed by model and text).",
)
@click.option("--no-cache", is_flag=True, help="Embed every passage again.")
def eval_command(
    dataset_dir: Path,
    as_json: bool,
    filter_field: str | None,
    query_field: str,
    model_path: str | None,
    reranker_path: str | None,
    cache_dir: str,
    no_cache: bool,
) -> None:
    """Index DATASET_DIR (corpus.jsonl, queries.jsonl, qrels.tsv) and print nDCG@10, Recall@100
    and MRR@10 for dense, sparse and hybrid retrieval."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        if not (dataset_dir / name).is_file():
            raise click.UsageError(f"{dataset_dir} has no {name} (BEIR layout expected)")
    from rag.embed import Embedder, EmbedderConfig, load_embedder, load_reranker
    from rag.embed_cache import CachedEmbedder
    from rag.eval import format_table, run_eval
    from rag.fusion import FusionConfig

    def log(message: str) -> None:
        click.echo(message, err=True)

    embedder: Embedder = load_embedder(EmbedderConfig(model_path=model_path))
    cached = None if no_cache else CachedEmbedder(embedder, cache_dir)
    reranker = load_reranker(reranker_path) if reranker_path else None
    fusion = FusionConfig()
    try:
        run, report = asyncio.run(
            run_eval(
                str(dataset_dir),
                cached or embedder,
                filter_field=filter_field,
                query_field=query_field,
                reranker=reranker,
                fusion=fusion,
                log=log,
            )
        )
    finally:
        if cached is not None:
            cached.save()
    if as_json:
        payload = {
            "dataset": run.dataset,
            "model": embedder.model_name,
            "reranker": reranker.model_name if reranker else None,
            "chunks": run.chunk_count,
            "fusion": dataclasses.asdict(fusion),
            "timings_s": run.timings,
            "results": report,
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(format_table(run.dataset, report))
