"""Sixteen visitors at once: errors, cross-talk, latency per question kind, and the server's memory.

Run: python benchmarks/bench_load.py [--visitors 16] [--rounds 2]

Each visitor is its own gradio_client session with its own image (a different shape, size and position), and asks,
over ``/chat``, the questions people ask: why?, what is it?, how sure?, show the region, does it hold up?. An answer
is cross-talk when it names another visitor's shape or image. Printed: errors, cross-talk, p50/p95 latency per
question kind (seconds, as the client sees them), and the server's resident memory before, at peak and after.

Then fairness, on a server whose per-session bound allows five: one visitor queues five slow questions ("compare
methods") at once, another asks a quick one ("what is it?") right after. Printed: the quick answer's time alone,
behind the slow visitor's five, and one slow answer's time; the target is that the quick one waits at most about one
slow answer (sessions take turns in the queue).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from server import rss_mb, running_app, shape_png, upload_dir

# isort: split
from gradio_client import Client, handle_file

SHAPES = ("circle", "square", "triangle", "star", "cross")
QUESTIONS = ("why?", "what is it?", "how sure are you?", "show me the region", "does it hold up?")


def text_of(conversation: list[dict]) -> str:
    """The text of the last answer (after the last user message)."""
    at = max(i for i, m in enumerate(conversation) if m["role"] == "user")
    parts = [c.get("text", "") for m in conversation[at + 1:] for c in m["content"] if c.get("type") == "text"]
    return re.sub(r"\\(.)", r"\1", "\n".join(parts))


def visitor(client: Client, image: str, shape: str, rounds: int) -> tuple[dict[str, list[float]], int, int]:
    """One visitor's questions: (latencies by question, errors, cross-talk answers)."""
    times: dict[str, list[float]] = {q: [] for q in QUESTIONS}
    errors = crosstalk = 0
    for round_ in range(rounds):
        for question in QUESTIONS:
            files = [handle_file(image)] if (round_, question) == (0, "why?") else []
            started = time.perf_counter()
            try:
                conversation, *_ = client.predict({"text": question, "files": files}, api_name="/chat")
            except Exception:
                errors += 1
                continue
            times[question].append(time.perf_counter() - started)
            answer = text_of(conversation).lower()
            headline = answer.strip().split("\n")[0]  # names the class the answer is about
            others = [s for s in SHAPES if s != shape and re.search(rf"\b{s}\b", headline)]
            if question in ("why?", "what is it?") and (shape not in headline or others):
                crosstalk += 1
            if re.search(r"image [2-9]", answer):  # every visitor has exactly one image
                crosstalk += 1
    return times, errors, crosstalk


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


SLOW, QUICK = "compare methods", "what is it?"
#: The slow visitor's burst (the fairness server lets one session queue this many).
BURST = 5


def ask(client: Client, text: str, image: str | None = None) -> float:
    """Seconds for one /chat answer (with ``image`` uploaded in the same turn)."""
    started = time.perf_counter()
    client.predict({"text": text, "files": [handle_file(image)] if image else []}, api_name="/chat")
    return time.perf_counter() - started


def fairness(url: str, folder) -> None:
    """A quick question's wait behind another visitor's slow ones, against alone and against one slow answer.

    Every slow question comes with an image of its own (another size each time): the session's caches would answer
    a repeated question about the same image at once.
    """
    slow_client, quick_client = (Client(url, verbose=False, download_files=False) for _ in range(2))
    slow_images = iter(shape_png(folder, SHAPES[k % len(SHAPES)], size=(150 + 6 * k, 190 + 4 * k), name=f"slow{k}.png")
                       for k in range(2 + BURST))
    ask(quick_client, "why?", shape_png(folder, "circle", name="quick.png"))
    alone = statistics.median(ask(quick_client, QUICK) for _ in range(3))
    one_slow = statistics.median(ask(slow_client, SLOW, next(slow_images)) for _ in range(2))
    jobs = [slow_client.submit({"text": SLOW, "files": [handle_file(image)]}, api_name="/chat")
            for image in slow_images]
    time.sleep(0.3)  # the burst is queued first
    behind = ask(quick_client, QUICK)
    for job in jobs:
        job.result()
    print(f"fairness: quick answer alone {alone:.2f} s, behind {BURST} slow ones {behind:.2f} s, one slow answer "
          f"{one_slow:.2f} s: waited {max(0.0, behind - alone) / one_slow:.2f} slow answers (target <= 1)")


def fairness_app() -> contextlib.AbstractContextManager:
    """The app with a per-session bound that lets the slow visitor queue its whole burst."""
    return running_app(EXPLAINER_QUEUE_PER_SESSION=str(BURST))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fairness-only", action="store_true", help="only the fairness measurement")
    args = parser.parse_args()
    if args.fairness_only:
        with upload_dir() as folder, fairness_app() as (url, _chat_app):
            fairness(url, folder)
        return
    with upload_dir() as folder, running_app() as (url, _chat_app):
        images = [(shape_png(folder, SHAPES[i % len(SHAPES)], size=(140 + 8 * i, 180 + 6 * i), name=f"v{i}.png"),
                   SHAPES[i % len(SHAPES)]) for i in range(args.visitors)]
        # Each visitor opens the page first (the client reads the app's config), then all ask at once.
        clients = [Client(url, verbose=False, download_files=False) for _ in images]
        before, peak = rss_mb(), [rss_mb()]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.visitors) as pool:
            futures = [pool.submit(visitor, client, image, shape, args.rounds)
                       for client, (image, shape) in zip(clients, images, strict=True)]
            while not all(f.done() for f in futures):
                peak.append(rss_mb())
                time.sleep(0.05)
            results = [f.result() for f in futures]
        wall = time.perf_counter() - started
        after = rss_mb()
    errors = sum(r[1] for r in results)
    crosstalk = sum(r[2] for r in results)
    answered = sum(len(v) for r in results for v in r[0].values())
    print(f"{args.visitors} visitors x {args.rounds} rounds x {len(QUESTIONS)} questions on 2 CPUs "
          f"(os.cpu_count()={os.cpu_count()}): {answered} answers in {wall:.1f} s")
    print(f"errors: {errors}   cross-talk: {crosstalk}")
    print(f"{'question':<22}{'p50 s':>8}{'p95 s':>8}")
    for question in QUESTIONS:
        values = [t for r in results for t in r[0][question]]
        print(f"{question:<22}{statistics.median(values):8.2f}{percentile(values, 0.95):8.2f}")
    print(f"server RSS: {before:.0f} MB before, {max(peak):.0f} MB peak, {after:.0f} MB after")
    with upload_dir() as folder, fairness_app() as (url, _chat_app):
        fairness(url, folder)


if __name__ == "__main__":
    main()
