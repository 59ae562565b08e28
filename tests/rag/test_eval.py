"""`enclave eval` on a tiny BEIR dataset written here: real pipeline, real metrics, both settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag.eval import document_run, load_beir, metrics
from rag.types import SearchHit

CORPUS = [
    ("d1", "Biology 101", "Late lab reports lose five points per day.", "bio"),
    ("d2", "Biology 101", "The final exam is worth forty percent of the grade.", "bio"),
    ("d3", "History 200", "Essays must be submitted through the online portal.", "hist"),
    ("d4", "History 200", "The final exam is an essay on the French Revolution.", "hist"),
]
QUERIES = [
    ("q1", "How many points do late lab reports lose?", "bio", "d1"),
    ("q2", "What is the final exam about?", "hist", "d4"),
    ("q3", "Where do I submit essays?", "hist", "d3"),
]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    directory = tmp_path / "tiny"
    directory.mkdir()
    with open(directory / "corpus.jsonl", "w") as handle:
        for doc_id, title, text, course in CORPUS:
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text, "metadata": {"course": course}}) + "\n")
    with open(directory / "queries.jsonl", "w") as handle:
        for qid, text, course, _ in QUERIES:
            handle.write(json.dumps({"_id": qid, "text": text, "course": course}) + "\n")
    with open(directory / "qrels.tsv", "w") as handle:
        handle.write("query_id\tdoc_id\tscore\n")
        for qid, _, _, doc_id in QUERIES:
            handle.write(f"{qid}\t{doc_id}\t1\n")
        handle.write("q4\td2\t0\n")  # a query with no relevant document is not counted
    return directory


def hit(document_id: str, ordinal: int = 0) -> SearchHit:
    return SearchHit(f"{document_id}:{ordinal}", document_id, "c", 1, ordinal, 1.0, "", "", "", None)


def test_document_run_ranks_a_document_by_its_best_chunk() -> None:
    run = document_run([hit("a", 0), hit("b", 0), hit("a", 1), hit("c", 0)])
    assert sorted(run, key=lambda doc: -run[doc]) == ["a", "b", "c"]


def test_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    runs = {"q1": {"a": 3.0, "b": 2.0}, "q2": {"a": 3.0, "b": 2.0}}
    result = metrics(qrels, runs)
    assert result["mrr@10"] == pytest.approx(0.75)
    assert result["ndcg@10"] == pytest.approx((1 + 1 / 1.5849625) / 2, abs=1e-4)
    assert result["recall@100"] == 1.0


def test_load_beir_drops_queries_without_a_relevant_document(dataset: Path) -> None:
    loaded = load_beir(str(dataset))
    assert set(loaded.qrels) == {"q1", "q2", "q3"}
    assert loaded.corpus["d1"]["metadata"]["course"] == "bio"


def test_enclave_eval_prints_json_for_every_mode_and_setting(dataset: Path, tmp_path: Path) -> None:
    from portal.cli_eval import eval_command

    result = CliRunner().invoke(
        eval_command,
        [str(dataset), "--json", "--filter-field", "course", "--cache-dir", str(tmp_path / "cache")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["dataset"] == "tiny" and payload["chunks"] == 4
    assert set(payload["results"]) == {"filtered", "unfiltered"}
    for setting in ("filtered", "unfiltered"):
        modes = payload["results"][setting]
        assert set(modes) == {"dense", "sparse", "hybrid"}
        for values in modes.values():
            assert values["queries"] == 3
            assert 0.0 <= values["ndcg@10"] <= 1.0
    # Inside its own course each question has one obvious answer.
    assert payload["results"]["filtered"]["hybrid"]["mrr@10"] == 1.0
    assert payload["results"]["filtered"]["sparse"]["recall@100"] == 1.0
    # The embeddings were cached for the next run.
    assert any((tmp_path / "cache").rglob("*.npz"))


def test_enclave_eval_refuses_a_directory_without_beir_files(tmp_path: Path) -> None:
    from portal.cli_eval import eval_command

    result = CliRunner().invoke(eval_command, [str(tmp_path)])
    assert result.exit_code == 2
    assert "corpus.jsonl" in result.output
