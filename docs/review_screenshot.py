"""Take the README's screenshots of `datakit review` (docs/images/review.png, review-viewer.png) with Playwright.

    make -f pipelines/pipeline.mk OUT=build BG_COUNT=12 COMPOSITE_FLAGS="--size 512" all
    .venv/bin/python docs/review_screenshot.py build

Reviews BUILD/composite-rewritten into a scratch folder in Debian's chromium (headless, never
`playwright install`): rejects two composites, edits a caption, selects three, then shoots the grid
and the large view of one item.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from datakit.console import Reporter
from datakit.stages.review import ReviewConfig, run_review

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGES = Path(__file__).resolve().parent / "images"


def shoot(page, dest: Path) -> None:
    """A screenshot of the page, saved as a size-optimised PNG."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(page.screenshot())).convert("RGB").save(dest, optimize=True)


def main(build: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="datakit-review-shot-"))
    ready = threading.Event()
    box = {}

    def on_ready(running):
        box["running"] = running
        ready.set()

    def serve() -> None:
        try:
            run_review(ReviewConfig(input_dir=build / "composite-rewritten", out_dir=scratch / "reviewed"),
                       Reporter(quiet=True), on_ready=on_ready)
        except KeyboardInterrupt:  # stopped without a Save, as intended
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(60)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        page.goto(box["running"].url)
        page.wait_for_selector("body[data-ready='1']")
        for key in ("ArrowRight", "ArrowRight", "x", "ArrowDown", "x", "Home", "e"):
            page.keyboard.press(key)
        page.keyboard.press("Backspace")
        page.keyboard.type("looking at viewer")
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")
        for key in ("ArrowDown", "ArrowDown", "Shift+ArrowRight", "Shift+ArrowRight"):
            page.keyboard.press(key)
        expect(page.locator(".card[data-action=reject]")).to_have_count(2)
        for img in page.locator(".card img").all():
            img.scroll_into_view_if_needed()
        page.keyboard.press("Home")
        page.wait_for_timeout(800)
        shoot(page, IMAGES / "review.png")
        page.keyboard.press("Escape")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        page.wait_for_selector("#viewer:not([hidden]) img")
        page.wait_for_timeout(800)
        shoot(page, IMAGES / "review-viewer.png")
        browser.close()
    box["running"].stop()
    thread.join(10)
    print(f"wrote {IMAGES / 'review.png'} and {IMAGES / 'review-viewer.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build"))
