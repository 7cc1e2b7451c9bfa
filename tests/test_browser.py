"""A real browser: headless Debian chromium, driven by Playwright, uses the chat like a person would.

Each test is a new visitor on a page of its own: it uploads a bundled example image and asks "why?" itself, then
checks one thing (the heatmap picture and the class the engine gives; a suggested follow-up button; an uploaded
mask; a painted region). Every step waits for what it needs to see in the page, never for a fixed time.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from app_server import MODEL, running_app
from PIL import Image

from explainer import explain, load_image, load_model
from explainer.demo import Example, load_examples

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WAIT_MS = 90_000  # generous: a busy 2-CPU runner can take a while to start a browser and answer

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def example() -> Example:
    """The first bundled example asked of the default test model."""
    found = [e for e in load_examples() if e.model in ("", MODEL)]
    assert found, "explainer/demo/examples/examples.json lists no example for the shapes model"
    return found[0]


@pytest.fixture(scope="module")
def browser():
    """One server and one headless chromium for the module; every test gets its own page (see :func:`page`)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install chromium); .ci/run does")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with running_app() as (url, _app), sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched, url
        finally:
            launched.close()


def _fresh_page(browser, viewport: dict):
    """A fresh browser context and page on the app: a new visitor with an empty conversation, whatever ran before."""
    launched, url = browser
    context = launched.new_context(viewport=viewport)
    try:
        tab = context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.goto(url)
        yield tab
    finally:
        context.close()


@pytest.fixture
def page(browser):
    yield from _fresh_page(browser, {"width": 1280, "height": 1000})


def _ask_why(page, image: str):
    """Attach ``image`` in the chat box, ask "why?", and wait for the Grad-CAM answer; returns the bot rows."""
    from playwright.sync_api import expect

    box = page.locator("#chat-input")
    box.locator("input[type=file]").set_input_files(image)
    expect(box.locator("img")).to_have_count(1)  # the upload's thumbnail: the file is attached
    box.locator("textarea").fill("why?")
    box.locator("textarea").press("Enter")
    bot = page.locator("#chatbot .bot-row")
    expect(bot.first).to_contain_text("Grad-CAM map points at")
    return bot


def _loaded_picture(page, locator):
    """The element handle of picture ``locator`` once the browser has decoded it."""
    handle = locator.element_handle()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=handle)
    return handle


def test_upload_why_shows_heatmap_and_class(page, example):
    from playwright.sync_api import expect

    expected = explain(load_model(MODEL), example.image).target_label
    bot = _ask_why(page, example.image)
    expect(bot.locator("[data-testid=bot]").first).to_contain_text(expected)
    heatmap = bot.locator("img").first
    expect(heatmap).to_have_attribute("alt", re.compile(f"^Grad-CAM for {re.escape(expected)} "))
    _loaded_picture(page, heatmap)

    shown = np.asarray(Image.open(io.BytesIO(page.request.get(heatmap.get_attribute("src")).body())).convert("RGB"))
    original = load_image(example.image)
    assert shown.shape[:2] == original.shape[:2]
    assert np.abs(shown.astype(int) - original.astype(int)).mean() > 5  # coloured by the heatmap, not the input


def test_suggested_follow_up_button_asks_it(page, example):
    from playwright.sync_api import expect

    _ask_why(page, example.image)
    button = page.locator("#chatbot button.option", has_text="How confident is it?")
    expect(button).to_be_visible()
    button.click()
    expect(page.locator("#chatbot [data-testid=user]").last).to_contain_text("How confident is it?")
    expect(page.locator("#chatbot .bot-row").last).to_contain_text("calibrated")


def _magenta_pixels(page, image) -> int:
    """How many pixels of a picture in the page are the expected region's outline colour."""
    picture = np.asarray(Image.open(io.BytesIO(page.request.get(image.get_attribute("src")).body())).convert("RGB"))
    red, green, blue = (picture[..., i].astype(int) for i in range(3))
    return int(((red > 200) & (green < 80) & (blue > 200)).sum())


def test_an_uploaded_mask_gets_the_region_outlined(page, example, tmp_path):
    """After a question about an image, a mask sent with the word "mask" is compared with the map."""
    from playwright.sync_api import expect

    before = _ask_why(page, example.image).count()
    image = load_image(example.image)
    mask = np.zeros(image.shape[:2], np.uint8)
    height, width = mask.shape
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255  # the middle of the image
    path = tmp_path / "mask.png"
    Image.fromarray(mask).save(path)
    box = page.locator("#chat-input")
    box.locator("input[type=file]").set_input_files(str(path))
    expect(box.locator("img")).to_have_count(1)
    box.locator("textarea").fill("here is the mask of where it should look")
    box.locator("textarea").press("Enter")
    expect(page.locator("#chatbot [data-testid=user]").last).to_contain_text("mask of where it should look")
    expect(page.locator("#chatbot .bot-row")).to_have_count(before + 1)
    answer = page.locator("#chatbot .bot-row").last
    expect(answer).to_contain_text("inside")
    picture = answer.locator("img").first
    _loaded_picture(page, picture)
    assert _magenta_pixels(page, picture) > 50  # the visitor's region is outlined in its own colour


def test_a_painted_region_gets_an_answer(page, example):
    """The "Where should it look?" panel: load the current image, paint on it, ask."""
    from playwright.sync_api import expect

    bot = _ask_why(page, example.image)
    before = bot.count()
    page.get_by_text("Where should it look?").click()
    page.locator("#region-fetch").click()
    editor = page.locator("#region-editor")
    # The editor first shows an empty canvas; drawing the fetched image is its first undoable step, so Undo turns
    # on once the background is drawn and the canvas has the image's scale: strokes made before would be lost.
    expect(editor.get_by_role("button", name="Undo", exact=True)).to_be_enabled()
    canvas = editor.locator("canvas").first
    expect(canvas).to_be_visible()
    area = canvas.bounding_box()
    x0, y0 = area["x"] + area["width"] * 0.35, area["y"] + area["height"] * 0.35
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x0 + area["width"] * 0.03 * step, y0 + area["height"] * 0.03 * step, steps=3)
    page.mouse.up()
    page.locator("#region-check").click()
    expect(page.locator("#chatbot [data-testid=user]").last).to_contain_text("Is it looking here?")
    expect(page.locator("#chatbot .bot-row")).to_have_count(before + 1)
    answer = page.locator("#chatbot .bot-row").last
    expect(answer).to_contain_text("inside")
    picture = answer.locator("img").first
    _loaded_picture(page, picture)
    assert _magenta_pixels(page, picture) > 20


# --- what a person sees, on a desktop and on a phone ---------------------------------------------------------------

VIEWPORTS = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(params=sorted(VIEWPORTS))
def screen(browser, request):
    """A fresh page at a desktop's or a phone's size."""
    yield from _fresh_page(browser, VIEWPORTS[request.param])


def _newest_reply_top(page) -> dict:
    """Where the newest reply's first line is: against the chat's visible area and against the window."""
    return page.evaluate("""() => {
        const chat = document.querySelector('#chatbot');
        const rows = [...chat.querySelectorAll('.user-row, .bot-row')];
        const lastUser = rows.map(r => r.matches('.user-row')).lastIndexOf(true);
        const reply = rows.slice(lastUser + 1).find(r => r.matches('.bot-row'));
        const box = chat.getBoundingClientRect(), top = reply.getBoundingClientRect().top;
        return {inChat: top >= box.top - 1 && top <= box.bottom - 40,
                inWindow: top >= -1 && top <= window.innerHeight - 40};
    }""")


def test_a_long_answer_opens_at_its_first_line(screen, example):
    from playwright.sync_api import expect

    _ask_why(screen, example.image)
    box = screen.locator("#chat-input textarea")
    box.fill("show the region")
    box.press("Enter")
    expect(screen.locator("#chatbot .bot-row").last.locator("img")).to_have_count(1)
    expect(screen.locator("#chatbot")).to_contain_text("segmented by")
    screen.wait_for_timeout(1000)  # the pictures above finish loading
    assert _newest_reply_top(screen) == {"inChat": True, "inWindow": True}


def test_an_example_brings_its_answer_into_view(screen):
    from playwright.sync_api import expect

    examples = screen.locator("#examples")
    examples.scroll_into_view_if_needed()
    examples.locator("tbody tr").first.locator("td").nth(1).click()
    expect(screen.locator("#chatbot .bot-row").first.locator("img")).to_have_count(1)
    screen.wait_for_timeout(1000)
    assert _newest_reply_top(screen) == {"inChat": True, "inWindow": True}


def test_the_page_opens_at_the_top_and_never_scrolls_sideways(screen, example):
    assert screen.evaluate("window.scrollY") == 0
    _ask_why(screen, example.image)
    wide = screen.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert wide <= 0
    overflowing = screen.evaluate("""() => [...document.querySelectorAll('table')].filter(t => {
        const r = t.getBoundingClientRect(); return r.width > 0 && r.right > window.innerWidth + 1; }).length""")
    assert overflowing == 0


def test_follow_ups_are_chips_and_main_controls_are_tappable(screen, example):
    _ask_why(screen, example.image)
    chips = screen.locator("#chatbot button.option")
    sizes = [chips.nth(i).bounding_box() for i in range(chips.count())]
    assert len(sizes) >= 2 and all(size["height"] >= 44 for size in sizes)
    assert len({round(size["y"]) for size in sizes}) < len(sizes)  # some share a row: not a stack
    for button in screen.locator("#chat-input button").all():
        size = button.bounding_box()
        if size and size["width"] > 0:
            assert size["width"] >= 44 and size["height"] >= 44
