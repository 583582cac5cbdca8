"""How much do concurrent requests gain over the same requests one at a time, with continuous batching off and on?

Starts ``transformers serve`` on ``MOLMO_MODEL_ID`` (``tiny`` by default here: a CPU machine) twice, once with
``--continuous-batching``, and for each sends N image questions one at a time, then the same N at once (N threads
of the ``openai`` client). It prints answers per second and the ratios, all measured in this one run, so the
machine's speed cancels out. Every request is greedy and asks for the same number of tokens.

    python scripts/benchmark_serving.py [--requests 8] [--max-new-tokens 32] [--model tiny]

What to expect: transformers serve (5.25) batches continuously only for text-only models ("Only LLMs support
continuous batching. Falling back to sequential generation." in its log), and Molmo2 reads images, so both servers
answer one request after another; concurrent requests then gain only the overlap of decoding images and sending
answers with generating. On a GPU, vLLM batches Molmo2's requests (lesson 13).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from molmo_nb_utils import INPUT_DIR, server_chat, start_server, user_message  # noqa: E402

QUESTIONS = [
    (INPUT_DIR / "coins.jpg", "Point to the coins."),
    (INPUT_DIR / "cat.jpg", "What is this?"),
    (INPUT_DIR / "rocket.jpg", "Point to the rocket."),
    (INPUT_DIR / "coffee.jpg", "How many cups are there?"),
]


def _rates(server, requests: int, max_new_tokens: int) -> tuple[float, float]:
    """(answers per second one at a time, answers per second all at once) for the same requests."""
    client = server.client()
    questions = [[user_message(p, text=t)] for p, t in (QUESTIONS * requests)[:requests]]

    def ask(messages):
        return server_chat(client, messages, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)

    ask(questions[0])  # warm up: the first request loads what the server loads lazily
    start = time.perf_counter()
    for messages in questions:
        ask(messages)
    one_by_one = requests / (time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(requests) as pool:
        list(pool.map(ask, questions))
    together = requests / (time.perf_counter() - start)
    return one_by_one, together


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--model", default=os.environ.get("MOLMO_MODEL_ID") or "tiny")
    args = parser.parse_args()
    results = {}
    for batching in (False, True):
        with start_server(args.model, continuous_batching=batching, quiet=True) as server:
            print(server.settings.describe())
            results[batching] = _rates(server, args.requests, args.max_new_tokens)
            if "Falling back to sequential generation" in server.log_tail(200):
                print(
                    "  the server's log: continuous batching is for text-only models; it generates one by one"
                )
    print(f"\n{args.requests} image questions, {args.max_new_tokens} new tokens each, answers per second:")
    for batching, (alone, together) in results.items():
        name = "continuous batching" if batching else "plain"
        print(f"  {name:<19}: one at a time {alone:.2f}, {args.requests} at once {together:.2f}, "
              f"ratio {together / alone:.2f}")  # fmt: skip
    print(f"  concurrent, batching on / off: {results[True][1] / results[False][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
