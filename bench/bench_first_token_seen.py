"""What a person waits for: time from the question's POST to the first token event on the page's stream, printed
as JSON, with the answer begun when the question is saved (`chat_answer_head_start_s`, the default) and without.

bench_chat_overhead.py subtracts the model's own time to first token and opens the stream at once, which leaves the
portal's share. A person's wait also holds the model's time to first token and the page's round trip between the
POST's answer and the stream's request (the browser swaps the answer bubble in, then opens the stream; over a
network, one round trip or more). The instrument LLM here waits `--first-token-ms` before its first token, and the
reader waits `--open-delay-ms` before opening the stream. Two portals run side by side (head start 3 s, and 0), each
with its own instrument and database, and one question is asked of each in turn, so both see the same moments of
the machine.

    .venv/bin/python bench/bench_first_token_seen.py [--pairs 60 --first-token-ms 150 --open-delay-ms 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_chat_overhead import first_token  # noqa: E402
from bench.chat_bench_support import Deployment, lean_copy, percentile  # noqa: E402
from bench.lean_http import LeanClient  # noqa: E402

SIDES = {"head_start": "3", "no_head_start": "0"}


async def first_token_seen(client: LeanClient, open_delay_s: float) -> float:
    """Seconds from the POST to the first token event, the stream opened `open_delay_s` after the POST's answer."""
    elapsed, _marker, _ended = await first_token(client, keep_reading=False, open_delay_s=open_delay_s)
    return elapsed


async def run(args: argparse.Namespace) -> dict[str, object]:
    deployments = {side: Deployment(llm_tokens=40, llm_interval_ms=20, llm_first_token_ms=args.first_token_ms,
                                    extra_env={"ENCLAVE_CHAT_ANSWER_HEAD_START_S": value})
                   for side, value in SIDES.items()}
    try:
        for deployment in deployments.values():
            await asyncio.to_thread(deployment.start)
        clients = {side: lean_copy(await d.sign_in()) for side, d in deployments.items()}
        for client in clients.values():
            for _ in range(3):  # warm-up: first embedding, first prompt count, connection pools
                await first_token_seen(client, args.open_delay_ms / 1000)
        seen: dict[str, list[float]] = {side: [] for side in SIDES}
        for i in range(args.pairs):
            order = list(SIDES) if i % 2 == 0 else list(reversed(SIDES))
            for side in order:
                seen[side].append(await first_token_seen(clients[side], args.open_delay_ms / 1000) * 1000)
                await asyncio.sleep(args.pause_s)
        differences = [a - b for a, b in zip(seen["head_start"], seen["no_head_start"], strict=True)]
        return {
            "benchmark": "chat_first_token_seen",
            "instrument_first_token_ms": args.first_token_ms,
            "stream_opened_after_post_answer_ms": args.open_delay_ms,
            "pairs": args.pairs,
            **{f"{side}_ms": {"p50": round(percentile(values, 50), 1), "p90": round(percentile(values, 90), 1)}
               for side, values in seen.items()},
            "median_paired_difference_ms": round(statistics.median(differences), 1),
            "pairs_where_head_start_was_sooner": sum(1 for d in differences if d < 0),
        }
    finally:
        for deployment in deployments.values():
            deployment.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60, help="questions asked of each portal")
    parser.add_argument("--first-token-ms", type=float, default=150.0, help="the instrument's time to first token")
    parser.add_argument("--open-delay-ms", type=float, default=40.0, help="wait between the POST's answer and the stream")
    parser.add_argument("--pause-s", type=float, default=0.3, help="pause after each question")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
