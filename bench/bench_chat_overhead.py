"""Portal overhead on the chat path, printed as JSON.

Overhead = time from the question's POST to the first token event on the page's stream, minus the instrument
LLM's own time to first token for that question (bench/instant_llm.py answers at once). Two phases:

1. one user, questions one after another: p50 (target <= 20 ms);
2. `--streams` other answers kept streaming while new questions arrive at `--rate` per second: p99 of the new
   questions' overhead (target <= 150 ms), and how many streams ended without error.

The load runs on the same machine as the portal; it reads the streams with bench/lean_http.py so that as little
of the machine as possible goes to the load generator rather than the portal being measured.

    .venv/bin/python bench/bench_chat_overhead.py [--streams 200 --rate 5 --duration 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chat_bench_support import (  # noqa: E402
    Deployment,
    ask,
    lean_copy,
    new_marker,
    percentile,
    portal_overhead_ms,
)
from bench.lean_http import LeanClient  # noqa: E402


async def first_token(
    client: LeanClient, keep_reading: bool, on_first: asyncio.Event | None = None, open_delay_s: float = 0.0
) -> tuple[float, str, bool]:
    """Ask, open the stream (`open_delay_s` after the POST's answer, as a browser over a network would); return
    (seconds from POST to first token event, marker, stream ended cleanly)."""
    marker = new_marker()
    started = time.perf_counter()
    stream_url = await ask(client, marker)
    if open_delay_s:
        await asyncio.sleep(open_delay_s)
    first_at = 0.0
    ended = False
    tail = b""
    async with client.stream("GET", stream_url, {"accept": "text/event-stream"}) as (_status, _headers, chunks):
        async for chunk in chunks:
            seen = tail + chunk
            if not first_at and b"event: token" in seen:
                first_at = time.perf_counter()
                if on_first is not None:
                    on_first.set()
                if not keep_reading:
                    break
            ended = ended or b"event: done" in seen  # the done event carries the whole answer: look as it passes
            tail = seen[-32:]
    return first_at - started, marker, ended


async def background_stream(client: LeanClient, results: dict[str, int], started: asyncio.Event) -> None:
    try:
        _, _, ended = await first_token(client, keep_reading=True, on_first=started)
        results["ok" if ended else "cut"] += 1
    except Exception:  # noqa: BLE001 - counted, reported
        results["error"] += 1
    finally:
        started.set()  # a stream that failed before its first token must not hold up the measuring


async def run(args: argparse.Namespace) -> dict[str, object]:
    # Background answers must outlast the measuring phase: tokens * interval seconds each.
    deployment = Deployment(llm_tokens=args.tokens, llm_interval_ms=args.interval_ms,
                            database_url=os.environ.get("ENCLAVE_BENCH_DATABASE_URL"),
                            extra_env={"ENCLAVE_REDIS_URL": os.environ["ENCLAVE_BENCH_REDIS_URL"]}
                            if os.environ.get("ENCLAVE_BENCH_REDIS_URL") else {})
    await asyncio.to_thread(deployment.start)
    try:
        signed_in = await deployment.sign_in()
        client = lean_copy(signed_in)
        for _ in range(3):  # warm-up: first embedding, first prompt count, connection pools
            await first_token(client, keep_reading=False)

        single: list[tuple[float, str]] = []
        for _ in range(args.single):
            elapsed, marker, _ = await first_token(client, keep_reading=False)
            single.append((elapsed, marker))
            # One person asks after the previous answer is over. The reader left at the first token; the portal
            # notices at that answer's next token (--interval-ms later) and saves what arrived: wait for that, so
            # one question's measurement does not carry the previous answer's cleanup.
            await asyncio.sleep(args.pause_s)
        ttft = await deployment.instrument_ttft()
        single_overhead = portal_overhead_ms(single, ttft)

        results = {"ok": 0, "cut": 0, "error": 0}
        started = [asyncio.Event() for _ in range(args.streams)]
        ramp_began = time.perf_counter()
        background = [asyncio.create_task(background_stream(client, results, event)) for event in started]
        # The measuring starts once every background answer is streaming (their 200 questions are a burst that
        # is not part of what is measured), plus a moment for the process to settle.
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), timeout=args.ramp_timeout_s)
        ramp_s = time.perf_counter() - ramp_began
        await asyncio.sleep(args.settle_s)
        measured: list[tuple[float, str]] = []
        failures = 0

        async def measured_question() -> None:
            nonlocal failures
            try:
                elapsed, marker, _ = await first_token(client, keep_reading=False)
                measured.append((elapsed, marker))
            except Exception:  # noqa: BLE001
                failures += 1

        arrivals = []
        began = time.perf_counter()
        for i in range(int(args.rate * args.duration)):
            delay = began + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            arrivals.append(asyncio.create_task(measured_question()))
        await asyncio.gather(*arrivals)
        streaming_during = sum(1 for t in background if not t.done())
        await asyncio.gather(*background)
        ttft = await deployment.instrument_ttft()
        loaded_overhead = portal_overhead_ms(measured, ttft)
        await client.aclose()
        await signed_in.aclose()
        return {
            "benchmark": "chat_portal_overhead",
            "database": "postgresql" if deployment.database_url else "sqlite",
            "shared_state": "redis" if os.environ.get("ENCLAVE_BENCH_REDIS_URL") else "database",
            "instrument": {"tokens_per_answer": args.tokens, "token_interval_ms": args.interval_ms},
            "load_client": "bench/lean_http.py (asyncio streams, HTTP/1.1 keep-alive)",
            "single_user": {
                "questions": len(single_overhead),
                "overhead_ms_p50": percentile(single_overhead, 50),
                "overhead_ms_p90": percentile(single_overhead, 90),
                "overhead_ms_max": round(max(single_overhead), 2),
                "pause_between_questions_s": args.pause_s,
                "target_p50_ms": 20,
            },
            "under_load": {
                "background_streams": args.streams,
                "seconds_until_all_background_streams_had_a_token": round(ramp_s, 1),
                "background_streams_still_streaming_at_end_of_phase": streaming_during,
                "new_questions_per_s": args.rate,
                "questions": len(loaded_overhead),
                "question_failures": failures,
                "overhead_ms_p50": percentile(loaded_overhead, 50),
                "overhead_ms_p90": percentile(loaded_overhead, 90),
                "overhead_ms_p99": percentile(loaded_overhead, 99),
                "overhead_ms_max": round(max(loaded_overhead), 2) if loaded_overhead else None,
                "target_p99_ms": 150,
                "background_streams_completed": results["ok"],
                "background_streams_cut": results["cut"],
                "background_streams_errors": results["error"],
            },
        }
    finally:
        await asyncio.to_thread(deployment.stop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=60, help="questions in the one-user phase")
    parser.add_argument("--pause-s", type=float, default=0.3, help="one user's pause between questions")
    parser.add_argument("--streams", type=int, default=200, help="answers streaming in the background")
    parser.add_argument("--rate", type=float, default=5.0, help="new questions per second under load")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of new questions under load")
    parser.add_argument("--ramp-timeout-s", type=float, default=120.0, help="longest wait for every background stream")
    parser.add_argument("--settle-s", type=float, default=2.0, help="pause after the last background stream starts")
    parser.add_argument("--tokens", type=int, default=900, help="tokens per instrument answer")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="instrument gap between tokens")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
