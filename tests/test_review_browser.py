"""The review page in a real browser: Debian's chromium driven by Playwright (never `playwright install`).

The tests start `datakit review IN OUT` as a user would, read the address it prints, and use the page
with the keyboard: reject two items, edit a caption with autocompletion, add a tag to a selection,
filter, save, and check OUT. Without chromium or Playwright they are skipped, saying why; under CI
(CI=true, as .ci/run sets it) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from review_support import Review, chain, manifest_rows, plain_folder, snapshot, under_ci

# Chromium's own network chatter is refused on machines without internet: switch it off.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def need_browser():
    """(sync_playwright, chromium path), or a skip (a failure under CI) saying what is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the Python package playwright (pip install playwright; it is in datakit[dev])")
    browser = chromium_path()
    if browser is None:
        missing.append("Debian's chromium (apt-get install chromium)")
    if missing:
        message = "the review page's browser tests need " + " and ".join(missing)
        if under_ci():
            pytest.fail(f"CI is set but {message}: .ci/run installs them")
        pytest.skip(f"{message}; under CI this test fails instead")
    return sync_playwright, browser


@pytest.fixture
def page_of():
    """page_of(url) -> a Playwright page in headless chromium (closed after the test)."""
    sync_playwright, browser_path = need_browser()
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
    errors: list[str] = []

    def open_page(url: str):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        return page

    yield open_page
    browser.close()
    pw.stop()
    assert not errors, errors  # no script error on the page


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setitem(globals(), "chromium_path", lambda: None)  # no chromium on this machine
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set but .*chromium"):
        need_browser()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="under CI this test fails instead"):
        need_browser()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def card(page, key: str):
    return page.locator(f".card[data-key='{key}']")


def test_reject_two_with_the_keyboard_edit_a_caption_and_save(tmp_path, page_of):
    src = plain_folder(tmp_path / "in")
    before = snapshot(src)
    out = tmp_path / "out"
    review = Review(src, out)
    try:
        page = page_of(review.url)
        assert page.locator(".card").count() == 6
        assert "focused" in card(page, "item00.png").get_attribute("class")
        # reject item01 and item03: x rejects the focused item and moves on
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
        expect(page.locator(".card[data-action=reject]")).to_have_count(2)
        assert card(page, "item01.jpg").get_attribute("data-action") == "reject"
        assert card(page, "item03.png").get_attribute("data-action") == "reject"
        assert "focused" in card(page, "item04.jpg").get_attribute("class")

        # edit item00's caption: drop the last tag, add one by autocompletion and one new tag
        page.keyboard.press("Home")
        page.keyboard.press("e")
        page.wait_for_selector("#editor[open]")
        page.keyboard.press("Backspace")  # removes "outdoors"
        page.keyboard.type("bea")
        page.wait_for_selector("#editor-suggest li")
        assert page.locator("#editor-suggest li").first.inner_text().startswith("beach")  # the dataset's own tag
        page.keyboard.press("Tab")
        page.keyboard.type("sunset")
        page.keyboard.press("Enter")
        assert page.locator("#editor-chips .chip").all_inner_texts()[-2:] == ["beach\n×", "sunset\n×"]
        page.keyboard.press("Enter")  # an empty Enter: done
        expect(card(page, "item00.png").locator(".badge.edited")).to_be_visible()

        # add a tag to a selection of two (Shift+arrow selects, t opens the bulk editor)
        page.keyboard.press("End")
        page.keyboard.press("Shift+ArrowLeft")
        page.keyboard.press("t")
        page.wait_for_selector("#bulk[open]")
        page.keyboard.type("night sky")
        page.keyboard.press("Enter")
        expect(card(page, "item05.png").locator(".chips")).to_contain_text("night sky")
        expect(card(page, "item04.jpg").locator(".chips")).to_contain_text("night sky")
        page.keyboard.press("Escape")

        # the filter finds the two rejected ones, tags with spaces, tags left out, and any mix
        page.keyboard.press("/")
        page.keyboard.type("is:rejected")
        expect(page.locator("#grid .card")).to_have_count(2)
        page.keyboard.press("Escape")
        page.fill("#filter", 'tag:"white background"')
        expect(page.locator("#grid .card")).to_have_count(1)
        page.fill("#filter", '-tag:"sail kun" is:edited')
        expect(page.locator("#grid .card")).to_have_count(1)  # item05: no caption, but a bulk tag now
        page.fill("#filter", "")
        page.locator("#tag-list li", has_text="1girl").first.click()  # the tags panel filters too
        expect(page.locator("#grid .card")).to_have_count(3)
        page.fill("#filter", "")
        page.select_option("#sort", "tags")  # fewest tags first
        expect(page.locator("#grid .card").first).to_have_attribute("data-key", "item05.png")
        page.select_option("#sort", "name")

        page.click("#finish")
        page.wait_for_selector("#finished")
        code, _, err = review.wait()
    finally:
        review.kill()
    assert code == 0, err
    assert not (out / "item01.jpg").exists() and not (out / "item03.png").exists()
    rejected = {r["key"]: r for r in manifest_rows(out) if r["status"] == "rejected"}
    assert set(rejected) == {"item01.jpg", "item03.png"}
    assert all(r["reason"] == "rejected in review" for r in rejected.values())
    assert (out / "item00.txt").read_text() == "sail kun, 1girl, solo, smile, beach, sunset\n"
    assert (out / "item04.caption").exists() is False and (out / "item04.txt").read_text() == "sail kun, solo, sky, cloud, night sky\n"
    assert (out / "item05.txt").read_text() == "night sky\n"
    assert os.path.samefile(out / "item02.png", src / "item02.png") and os.path.samefile(out / "item02.txt", src / "item02.txt")
    decided = json.loads((out / "review.json").read_text())["items"]
    assert decided["item01.jpg"]["action"] == "reject" and decided["item00.png"]["tags"][-1] == "sunset"
    assert (out / "datakit.json").is_file()
    assert snapshot(src) == before


def test_decisions_come_back_in_the_next_session_and_the_large_view_shows_the_item(tmp_path, page_of):
    src = plain_folder(tmp_path / "in", n=4)
    out = tmp_path / "out"
    first = Review(src, out)
    try:
        page = page_of(first.url)
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
        page.keyboard.press("s")
        expect(page.locator("#status")).to_contain_text("saved to")
        page.click("#finish")
        page.wait_for_selector("#finished")
        assert first.wait()[0] == 0
    finally:
        first.kill()
    second = Review(src, out)
    try:
        page = page_of(second.url)
        assert card(page, "item01.jpg").get_attribute("data-action") == "reject"  # read back from review.json
        page.keyboard.press("Enter")
        page.wait_for_selector("#viewer:not([hidden]) img")
        for img in page.locator("#viewer img").all():  # decoded, so drawn at a real size
            expect(img).not_to_have_css("width", "0px")
        assert page.locator("#viewer-info h2").inner_text() == "item00.png"
        page.keyboard.press("ArrowRight")
        assert page.locator("#viewer-info h2").inner_text() == "item01.jpg"
        assert "rejected" in page.locator("#viewer-info .status").inner_text()
        page.keyboard.press("a")  # keep it after all (and move on)
        assert page.locator("#viewer-info h2").inner_text() == "item02.png"
        assert page.locator("#viewer .panel").count() == 2  # RGBA: on a checkerboard and on dark
        page.keyboard.press("Escape")
        page.click("#finish")
        page.wait_for_selector("#finished")
        assert second.wait()[0] == 0
    finally:
        second.kill()
    assert (out / "item01.jpg").exists() and not [r for r in manifest_rows(out) if r["status"] == "rejected"]


def test_composites_show_their_facts_and_filter_and_sort_by_them_and_by_warnings(tmp_path, page_of):
    paths = chain(tmp_path)  # cutout -> composite -> tag: the facts live two stages up
    composite = {r["file"]: r for r in manifest_rows(paths["composite"])}
    # one composite gets a warning upstream, as composite writes them for an enlarged subject
    rows = manifest_rows(paths["composite"])
    warned = "pose0__bg001.png"
    for r in rows:
        if r.get("file") == warned:
            r["warnings"] = ["subject enlarged 2.4x beyond its source"]
    (paths["composite"] / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    heights = {k: r["placement"]["height_fraction"] for k, r in composite.items() if r.get("status") == "ok"}
    assert len(heights) == 3
    out = tmp_path / "reviewed"
    review = Review(paths["tagged"], out)
    try:
        page = page_of(review.url)
        for key, r in composite.items():
            if key in heights:
                facts = card(page, key).locator(".facts")
                expect(facts).to_contain_text(r["framing"])  # as the composite manifest says, not the tagged one
                expect(facts).to_contain_text(f"height {round(r['placement']['height_fraction'] * 100)}%")
                expect(facts).to_contain_text(r["background"])
        expect(card(page, warned).locator(".warn")).to_contain_text("enlarged")
        upper = sorted(k for k in heights if composite[k]["framing"] == "upper")
        page.fill("#filter", "framing:upper")
        expect(page.locator("#grid .card")).to_have_count(len(upper))
        lowest = min(heights, key=heights.get)
        page.fill("#filter", f"height<{(sorted(heights.values())[0] + sorted(heights.values())[1]) / 2:.4f}")
        expect(page.locator("#grid .card")).to_have_count(1)
        expect(page.locator("#grid .card").first).to_have_attribute("data-key", lowest)
        page.fill("#filter", "has:warning")
        expect(page.locator("#grid .card")).to_have_count(1)
        expect(page.locator("#grid .card").first).to_have_attribute("data-key", warned)
        page.fill("#filter", "-warning:enlarged")
        expect(page.locator("#grid .card")).to_have_count(2)
        page.fill("#filter", "")
        page.select_option("#sort", "fact:subject height")  # smallest subject first
        expect(page.locator("#grid .card")).to_have_count(3)
        assert [c.get_attribute("data-key") for c in page.locator("#grid .card").all()] == sorted(heights, key=heights.get)
        page.select_option("#sort", "warnings")
        expect(page.locator("#grid .card").first).to_have_attribute("data-key", warned)
        card(page, warned).click()  # out of the filter field, onto the card
        page.keyboard.press("x")  # the warned one goes
        expect(card(page, warned)).to_have_attribute("data-action", "reject")
        page.click("#finish")
        page.wait_for_selector("#finished")
        assert review.wait()[0] == 0
    finally:
        review.kill()
    rows = {r["key"]: r for r in manifest_rows(out)}
    assert {k: r["status"] for k, r in rows.items()} == {k: "rejected" if k == warned else "ok" for k in heights}
    # emit takes the reviewed folder as it is: the rejected composite is not in the dataset
    from datakit.console import Reporter
    from datakit.stages.emit import EmitConfig, run_emit

    emitted = run_emit(EmitConfig(out_dir=tmp_path / "dataset", concepts=[("sail_kun", out)], workers=1), Reporter(quiet=True))
    assert emitted["counts"]["out"] == 2
    assert not list((tmp_path / "dataset").rglob(Path(warned).stem + ".*"))
