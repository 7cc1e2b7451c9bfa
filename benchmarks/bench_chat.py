"""Chat-turn latency on the server side, and how long ``python app.py`` takes to be ready.

Run: python benchmarks/bench_chat.py [--repeats N] [--startup-runs N]

Per model (MobileNetV2 224 with random weights, and the bundled shapes model when present) it prints the median of:
  explain() alone          the engine on the decoded image (the baseline);
  "why?" turn (chat)       ChatSession.respond("why?", [file]) in a fresh conversation: decode the upload, explain,
                           render the overlay, fill the template;
  "why?" turn (app)        the same plus what the app adds: writing the pictures as chat messages (JPEG files);
  follow-up "..."          a first follow-up about the same image that needs no new map; it must reuse the cached
                           explanation (checked: the engine is not called again).
Targets on 2 CPUs: "why?" turn <= 1.5 x explain(); a follow-up <= 20 ms; python app.py ready <= 20 s.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from common import median_ms, mobilenet_v2, report  # first: puts the repository on sys.path, quiets TensorFlow

# isort: split
import numpy as np
from PIL import Image

import explainer
from explainer.chat import ChatSession
from explainer.demo import model_path
from explainer.demo.generate import draw_plain_shape
from explainer.server.conversation import picture_file, reply_messages

ROOT = Path(__file__).resolve().parents[1]

FOLLOW_UPS = ("how confident is it?", "what is it?", "show the region")
WHY_TARGET, FOLLOW_UP_TARGET_MS, STARTUP_TARGET_S = 1.5, 20.0, 20.0


def photo_files(folder: Path, model: explainer.LoadedModel, count: int) -> list[Path]:
    """``count`` different uploads for ``model``: 640×480 JPEG photo-like images, or drawn circles for the shapes
    model (different, so no cache anywhere can answer a new "why?" from an earlier one)."""
    if "shapes" in model.name:
        image = draw_plain_shape("circle", height=480, width=640)[0]
    else:
        rng = np.random.default_rng(0)
        image = np.clip(rng.normal(128, 40, (480, 640, 3)) + np.linspace(0, 60, 640)[None, :, None], 0, 255)
        image = image.astype(np.uint8)
    paths = []
    for number in range(count):
        image[:8, :8] = number * 37 % 256
        paths.append(folder / f"{model.name}-{number}.jpg")
        Image.fromarray(image).save(paths[-1], quality=90)
    return paths


def why_turn(model: explainer.LoadedModel, upload: Path, with_app: bool) -> ChatSession:
    session = ChatSession(model)
    reply = session.respond("why?", [str(upload)])
    assert reply.images and not reply.error, reply.markdown
    if with_app:
        reply_messages(reply, lambda image, _caption: picture_file(image, tempfile.gettempdir()))
    return session


def follow_up_ms(model: explainer.LoadedModel, uploads: Iterator[Path], question: str, repeats: int) -> float:
    """Median time of ``question`` asked once right after "why?" (a fresh conversation each time)."""
    times = []
    for _ in range(repeats):
        session = why_turn(model, next(uploads), with_app=False)
        calls = session.state.explain_calls
        start = time.perf_counter()
        reply = session.respond(question)
        times.append((time.perf_counter() - start) * 1000)
        assert session.state.explain_calls == calls, f"{question!r} recomputed the map instead of reusing it"
        assert not reply.error, reply.markdown
    return statistics.median(times)


def bench_model(title: str, model: explainer.LoadedModel, folder: Path, repeats: int) -> None:
    explainer.warm_up(model)
    files = photo_files(folder, model, 3 * (repeats + 3) + len(FOLLOW_UPS) * repeats)
    uploads = iter(files)
    image = explainer.load_image(files[0])
    rows = [
        ("explain() alone", median_ms(lambda: explainer.explain(model, image), repeats)),
        ('"why?" turn (chat)', median_ms(lambda: why_turn(model, next(uploads), with_app=False), repeats)),
        ('"why?" turn (app)', median_ms(lambda: why_turn(model, next(uploads), with_app=True), repeats)),
    ]
    rows += [(f'follow-up "{q}"', follow_up_ms(model, uploads, q, repeats)) for q in FOLLOW_UPS]
    print(f"\n{title}: upload {image.shape[1]}×{image.shape[0]} JPEG, median of {repeats}")
    report(rows, "explain() alone")
    times = dict(rows)
    why_ratio = times['"why?" turn (app)'] / times["explain() alone"]
    slowest = max(ms for name, ms in rows if name.startswith("follow-up"))
    print(f'"why?" turn / explain(): {why_ratio:.2f} x (target <= {WHY_TARGET} x) '
          f"{'ok' if why_ratio <= WHY_TARGET else 'MISSED'}")
    print(f"slowest follow-up: {slowest:.1f} ms (target <= {FOLLOW_UP_TARGET_MS:.0f} ms) "
          f"{'ok' if slowest <= FOLLOW_UP_TARGET_MS else 'MISSED'}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def startup_seconds() -> float:
    """Wall time from starting ``python app.py`` to the first successful HTTP answer on its port."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="0")
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"app.py exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--startup-runs", type=int, default=1, help="0 skips the start-up measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_model("MobileNetV2 224×224 (random weights)", mobilenet_v2(), Path(folder), args.repeats)
        if model_path("shapes").is_file():
            bench_model("shapes 128×128 (bundled demo model)", explainer.load_model("shapes"), Path(folder),
                        args.repeats)
        else:
            print(f"\nshapes: skipped, {model_path('shapes')} is missing")
    if args.startup_runs:
        runs = [startup_seconds() for _ in range(args.startup_runs)]
        ready = statistics.median(runs)
        default = explainer.models.loading.default_model()[0]
        print(f"\npython app.py to ready (default model {default}): {ready:.1f} s "
              f"(median of {len(runs)}; target <= {STARTUP_TARGET_S:.0f} s) "
              f"{'ok' if ready <= STARTUP_TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
