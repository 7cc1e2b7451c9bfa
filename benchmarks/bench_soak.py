"""One long conversation: does the 300th turn cost what the 10th does, and does memory stay put?

Run: python benchmarks/bench_soak.py [--turns 300]

One session over the wire protocol the page uses (``/queue/join`` + ``/queue/data``): an image, then alternating
"why?" and "how sure are you?". Printed: the median latency of the first and the last ten turns, the bytes the
server sent for turn 10 and for the last turn, and the server's memory growth per turn after the first 50.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import httpx
from server import rss_mb, running_app, shape_png, upload_dir


def turn(http: httpx.Client, url: str, index: int, session: str, message: dict) -> int:
    """One chat turn; returns the bytes of the server's messages for it."""
    http.post(f"{url}/gradio_api/queue/join", json={"data": [message, None], "fn_index": index,
                                                    "session_hash": session}).raise_for_status()
    size = 0
    with http.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                size += len(line)
                if json.loads(line[5:]).get("msg") == "process_completed":
                    return size
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    with upload_dir() as folder, running_app() as (url, chat_app), httpx.Client(timeout=120) as http:
        index = next(i for i, fn in chat_app.demo.fns.items() if getattr(fn.fn, "__name__", "") == "chat_turn")
        session = uuid.uuid4().hex
        image = {"path": shape_png(folder, "star"), "meta": {"_type": "gradio.FileData"}}
        seconds, sizes, memory = [], [], []
        for n in range(args.turns):
            message = {"text": "why?", "files": [image]} if n == 0 else {
                "text": ("how sure are you?", "why?")[n % 2], "files": []}
            started = time.perf_counter()
            sizes.append(turn(http, url, index, session, message))
            seconds.append(time.perf_counter() - started)
            memory.append(rss_mb())
    first, last = statistics.median(seconds[:10]), statistics.median(seconds[-10:])
    growth = (memory[-1] - memory[49]) / max(1, len(memory) - 50) * 1024
    print(f"{args.turns} turns in one conversation")
    print(f"latency, median of turns 1-10: {1000 * first:.0f} ms; of the last 10: {1000 * last:.0f} ms "
          f"({last / first:.2f} x)")
    print(f"bytes sent for turn 10: {sizes[9]:,}; for turn {args.turns}: {sizes[-1]:,} "
          f"({sizes[-1] / sizes[9]:.2f} x)")
    print(f"server RSS: {memory[0]:.0f} MB after turn 1, {memory[-1]:.0f} MB after turn {args.turns}; "
          f"{growth:.1f} KB per turn after turn 50")


if __name__ == "__main__":
    main()
