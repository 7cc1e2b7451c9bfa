"""Pictures of the app for the README and for checking a layout: ``python tests/screenshots.py OUT [--phone]``.

Serves the app with the bundled ``shapes`` model, drives Debian's chromium through Playwright (1366×900, or 390×844
with ``--phone``) through the seed's workflow: confirm the model looks at the object ("why?"), then segment that
part ("segment it"). Writes ``why.png``, ``segment-it.png`` and ``page.png`` (the whole page) into OUT.
``--figure FILE`` instead writes the README's workflow figure from the engine alone: the image, its Grad-CAM map,
the segmented outline and the cut-out (on a checkerboard, which shows what is transparent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app_server import running_app
from test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS

from explainer.demo import EXAMPLES_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--phone", action="store_true", help="a 390×844 phone screen instead of 1366×900")
    parser.add_argument("--image", default=str(EXAMPLES_DIR / "shapes-star.png"))
    parser.add_argument("--figure", action="store_true", help="write OUT as the workflow figure (no browser)")
    args = parser.parse_args()
    if args.figure:
        workflow_figure(args.image, args.out)
        print(args.out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    viewport = {"width": 390, "height": 844} if args.phone else {"width": 1366, "height": 900}
    with running_app() as (url, _app), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=viewport, device_scale_factor=1).new_page()
        page.goto(url)
        box = page.locator("#chat-input")
        bot = page.locator("#chatbot .bot-row")
        for question, done, name in [("why?", "Grad-CAM map points at", "why.png"),
                                     ("segment it", "segmented by", "segment-it.png")]:
            if question == "why?":
                box.locator("input[type=file]").set_input_files(args.image)
                expect(box.locator("img")).to_have_count(1)
            box.locator("textarea").fill(question)
            box.locator("textarea").press("Enter")
            expect(bot.last.locator("img")).to_have_count(1)
            expect(page.locator("#chatbot")).to_contain_text(done)
            page.wait_for_timeout(800)  # the pictures decode
            page.locator("#chatbot").screenshot(path=str(args.out / name))
        page.screenshot(path=str(args.out / "page.png"), full_page=True)
        browser.close()
    print("\n".join(str(p) for p in sorted(args.out.glob("*.png"))))


def workflow_figure(image: str, out: Path) -> None:
    """Image | Grad-CAM | segmented outline and box | cut-out, side by side with captions, as a JPEG."""
    import cv2
    import numpy as np

    from explainer import explain, load_model
    from explainer.render import cutout, draw_region, overlay, tile

    result = explain(load_model("shapes"), image)
    cut = cutout(result.image, result.region.mask).astype(np.float32)
    yy, xx = np.mgrid[: cut.shape[0], : cut.shape[1]]
    checker = np.where(((yy // 8 + xx // 8) % 2)[..., None] == 0, 235.0, 200.0)
    alpha = cut[..., 3:] / 255.0
    shown_cut = (cut[..., :3] * alpha + checker * (1 - alpha)).astype(np.uint8)
    tiles = [result.image, overlay(result.image, result.heatmap), draw_region(result.image, result.region), shown_cut]
    captions = [f"{result.target_label} ({result.probability:.0%})", "Grad-CAM: where it looks",
                f"segmented ({result.region.segmenter.display_name})", f"cut out: {result.region.pixels} px"]
    picture = tile([cv2.resize(t, (256, 256), interpolation=cv2.INTER_NEAREST) for t in tiles], captions)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])


if __name__ == "__main__":
    main()
