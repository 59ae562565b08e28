"""Paired A/B of the portal's one-user overhead against another revision, printed as JSON.

On a shared machine the one-user overhead of the same code can move by several milliseconds between runs minutes
apart, more than most changes are worth. This runs two portals side by side, this working tree's and a baseline
revision's (checked out into a temporary git worktree), each with its own instrument LLM and database, and asks one
question of each in turn; both see the same moments of the machine. It prints each side's p50 / p90 and the median
of the per-pair differences (this tree minus baseline).

    .venv/bin/python bench/bench_chat_paired.py --baseline HEAD~1 [--pairs 100]

Both portals run this tree's benchmark support and instrument; each portal process runs its own tree's code and
migrations. The sample data is seeded by this tree's code, so the baseline must share the database schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_chat_overhead import first_token  # noqa: E402
from bench.chat_bench_support import (  # noqa: E402
    Deployment,
    instrument_ttft,
    lean_copy,
    percentile,
    portal_overhead_ms,
)
from bench.lean_http import LeanClient  # noqa: E402


async def serve() -> None:
    """One deployment whose portal runs the code of the current directory; its signed-in session on stdout."""
    deployment = Deployment(llm_tokens=40, llm_interval_ms=20)
    await asyncio.to_thread(deployment.start)
    try:
        lean = lean_copy(await deployment.sign_in())
        print(json.dumps({"base_url": lean.base_url, "headers": lean.headers, "llm_url": deployment.llm_url}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        deployment.stop()


def _start_side(tree: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, str(Path(__file__).resolve()), "--serve"], cwd=tree, stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert process.stdout is not None
    # The signed-in session is the one JSON line; log lines printed while the deployment seeds may come before it.
    for line in process.stdout:
        try:
            info = json.loads(line)
        except ValueError:
            continue
        if isinstance(info, dict) and "base_url" in info:
            return process, info
    process.terminate()  # not yet among the sides that `compare` stops
    process.wait(60)
    raise RuntimeError(f"the deployment for {tree} did not start; see {log}")


async def compare(tree: Path, baseline: str, pairs: int, pause_s: float) -> dict[str, object]:
    workdir = tree.parent
    sides: dict[str, tuple[subprocess.Popen[bytes], dict[str, Any]]] = {}
    try:
        for label, code in (("baseline", tree), ("this_tree", ROOT)):
            sides[label] = await asyncio.to_thread(_start_side, code, workdir / f"{label}.log")
        clients = {label: LeanClient(info["base_url"], info["headers"]) for label, (_p, info) in sides.items()}
        for client in clients.values():
            for _ in range(3):  # warm-up: first embedding, first prompt count, connection pools
                await first_token(client, keep_reading=False)
        asked: dict[str, list[tuple[float, str]]] = {label: [] for label in sides}
        for i in range(pairs):
            for label in ("baseline", "this_tree") if i % 2 == 0 else ("this_tree", "baseline"):
                elapsed, marker, _ = await first_token(clients[label], keep_reading=False)
                asked[label].append((elapsed, marker))
                await asyncio.sleep(pause_s)
        overhead = {label: portal_overhead_ms(asked[label], await instrument_ttft(info["llm_url"]))
                    for label, (_p, info) in sides.items()}
        differences = [new - old for old, new in zip(overhead["baseline"], overhead["this_tree"], strict=True)]
        return {
            "benchmark": "chat_overhead_paired",
            "baseline": baseline,
            "pairs": pairs,
            "baseline_ms": {"p50": percentile(overhead["baseline"], 50), "p90": percentile(overhead["baseline"], 90)},
            "this_tree_ms": {"p50": percentile(overhead["this_tree"], 50),
                             "p90": percentile(overhead["this_tree"], 90)},
            "median_paired_difference_ms": round(statistics.median(differences), 2),
            "pairs_where_this_tree_was_faster": sum(d < 0 for d in differences),
        }
    finally:
        for process, _info in sides.values():
            process.terminate()
        for process, _info in sides.values():
            await asyncio.to_thread(process.wait, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare this working tree with")
    parser.add_argument("--pairs", type=int, default=100, help="questions asked of each portal")
    parser.add_argument("--pause-s", type=float, default=0.3, help="pause after each question")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tree = Path(tempfile.mkdtemp(prefix="enclave-paired-")) / "baseline"
    git = ["git", "-C", str(ROOT), "worktree"]
    subprocess.run([*git, "add", "--detach", str(tree), args.baseline], check=True, capture_output=True)  # noqa: S603
    try:
        result = asyncio.run(compare(tree, args.baseline, args.pairs, args.pause_s))
    finally:
        subprocess.run([*git, "remove", "--force", str(tree)], check=False, capture_output=True)  # noqa: S603
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
