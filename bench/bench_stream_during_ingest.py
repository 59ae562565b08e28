"""Do answers keep flowing while a large document is indexed in the same portal process? Printed as JSON.

The portal runs with its in-process indexing worker. A few answers stream from the instant instrument LLM (a token
every `--interval-ms`); the reader timestamps every token event. First without ingestion (baseline), then while an
administrator's upload of a large document is parsed, embedded and stored. Reported: the largest gap between token
events minus the instrument's own interval (target < 100 ms), and percentiles.

    .venv/bin/python bench/bench_stream_during_ingest.py [--paragraphs 1500 --streams 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chat_bench_support import Deployment, ask, new_marker, percentile  # noqa: E402


def large_document(paragraphs: int) -> bytes:
    parts = ["# Infection control manual"]
    for i in range(paragraphs):
        if i % 20 == 0:
            parts.append(f"## Section {i // 20 + 1}: ward procedures")
        parts.append(
            f"Paragraph {i}: staff on ward {i % 40} check isolation signage, replace sharps bins when three quarters "
            f"full, record cleaning of commodes and mattresses, and escalate any outbreak of diarrhoea or vomiting "
            f"to the infection prevention team within {i % 12 + 1} hours, noting bed numbers and dates of onset."
        )
    return "\n\n".join(parts).encode()


async def stream_gaps(client: httpx.AsyncClient) -> list[float]:
    """Ask, read the whole answer; the gaps (ms) between successive token events as the reader saw them."""
    stream_url = await ask(client, new_marker())
    times: list[float] = []
    async with client.stream("GET", stream_url, headers={"accept": "text/event-stream"}) as response:
        async for chunk in response.aiter_raw():
            now = time.perf_counter()
            times.extend([now] * chunk.count(b"event: token"))
    return [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]


async def streams_until(client: httpx.AsyncClient, streams: int, done: asyncio.Event | None, rounds: int) -> list[float]:
    gaps: list[float] = []
    round_no = 0
    while True:
        results = await asyncio.gather(*(stream_gaps(client) for _ in range(streams)))
        for one in results:
            gaps.extend(one)
        round_no += 1
        if (done is None and round_no >= rounds) or (done is not None and done.is_set()):
            return gaps


async def wait_indexed(admin: httpx.AsyncClient, document_id: str, done: asyncio.Event, info: dict[str, object]) -> None:
    started = time.perf_counter()
    while True:
        data = (await admin.get(f"/admin/documents/{document_id}", headers={"accept": "application/json"})).json()
        if data["status"] in ("indexed", "failed"):
            info.update(status=data["status"], chunks=data["chunk_count"], seconds=round(time.perf_counter() - started, 1))
            done.set()
            return
        await asyncio.sleep(0.5)


def summary(gaps: list[float], interval_ms: float) -> dict[str, float | int]:
    added = [max(0.0, g - interval_ms) for g in gaps]
    return {"token_gaps": len(gaps), "added_gap_ms_p50": percentile(added, 50), "added_gap_ms_p99": percentile(added, 99),
            "added_gap_ms_max": round(max(added), 2) if added else float("nan")}


async def run(args: argparse.Namespace) -> dict[str, object]:
    deployment = Deployment(llm_tokens=args.tokens, llm_interval_ms=args.interval_ms)
    await asyncio.to_thread(deployment.start)
    try:
        nurse = await deployment.sign_in("noah.nurse@example.org")
        admin = await deployment.sign_in("ada.admin@example.org")
        await stream_gaps(nurse)  # warm-up
        baseline = await streams_until(nurse, args.streams, None, rounds=2)

        upload = await admin.post(
            f"/admin/collections/{deployment.clinical_collection_id}/upload",
            files={"files": ("infection-control-manual.md", large_document(args.paragraphs), "text/markdown")},
            headers={"accept": "application/json"},
        )
        if upload.status_code != 202:
            raise RuntimeError(f"upload answered {upload.status_code}: {upload.text[:300]}")
        document_id = upload.json()["created"][0]
        document_id = document_id["id"] if isinstance(document_id, dict) else document_id
        indexed = asyncio.Event()
        ingest: dict[str, object] = {"paragraphs": args.paragraphs}
        watcher = asyncio.create_task(wait_indexed(admin, document_id, indexed, ingest))
        during = await streams_until(nurse, args.streams, indexed, rounds=0)
        await watcher
        await nurse.aclose()
        await admin.aclose()
        return {
            "benchmark": "chat_streams_during_ingestion",
            "instrument": {"tokens_per_answer": args.tokens, "token_interval_ms": args.interval_ms},
            "concurrent_streams": args.streams,
            "ingestion": ingest,
            "baseline": summary(baseline, args.interval_ms),
            "during_ingestion": summary(during, args.interval_ms),
            "target_added_gap_ms_max": 100,
        }
    finally:
        await asyncio.to_thread(deployment.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paragraphs", type=int, default=1500, help="size of the large document")
    parser.add_argument("--streams", type=int, default=4, help="answers streaming at once")
    parser.add_argument("--tokens", type=int, default=150, help="tokens per instrument answer")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="instrument gap between tokens")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
