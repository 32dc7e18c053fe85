"""Deciding a cut-out's enclosed regions in the review: OUT/holes.toml, read back by `datakit cutout --holes-file`.

A real cut-out (the cutout stage on a drawn character with an enclosed gap between arm and body) is
reviewed through the running server, as the page does it (POST /api/hole); the holes file it writes is
read with the standard library's TOML reader and then given to the cutout stage, which must now cut
the region the review cut.
"""

from __future__ import annotations

import json
import tomllib
import urllib.request
from pathlib import Path

import pytest
from drawings import scene
from PIL import Image

from datakit.console import Reporter
from datakit.stages.cutout import CutoutConfig, run_cutout
from review_support import manifest_rows, serve_in_thread
from test_review_browser import page_of  # noqa: F401  (the browser fixture: chromium via Playwright)


def post(served, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "X-Review-Token": served.token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def get(served, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", headers={"X-Review-Token": served.token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def cutouts(tmp_path) -> Path:
    subjects = tmp_path / "subjects"
    subjects.mkdir()
    for name, kind in (("wave pose", "white"), ("wave2", "grey")):  # a stem with a space: a quoted TOML key
        Image.fromarray(scene("wave", kind, "png", 160).image).save(subjects / f"{name}.png")
    out = tmp_path / "cutout"
    run_cutout(CutoutConfig(input_dir=subjects, out_dir=out, workers=1), Reporter(quiet=True))
    rows = {r["file"]: r for r in manifest_rows(out) if r.get("status") == "ok"}
    assert all(any(h.get("number") == 1 for h in r.get("holes") or []) for r in rows.values()), rows
    return out


def test_a_hole_decided_on_the_page_goes_to_holes_toml_and_back_to_cutout(tmp_path, cutouts):
    out = tmp_path / "reviewed"
    served = serve_in_thread(cutouts, out)
    try:
        state = {i["key"]: i for i in get(served, "/api/state")["items"]}
        item = state["wave pose.png"]
        assert item["kind"] == "cutout" and item["holes"][0]["number"] == 1 and item["holes"][0]["decision"] is None
        assert item["holes"][0]["contour"]  # the page draws its outline
        assert item["facts"]["holes kept"] >= 1
        answer = post(served, "/api/hole", {"key": "wave pose.png", "number": 1, "action": "cut"})
        assert answer["holes_file"] == "holes.toml" and answer["items"][0]["holes"][0]["decision"] == "cut"
        written = tomllib.loads((out / "holes.toml").read_text(encoding="utf-8"))
        assert written == {"wave pose": {"cut": [1]}}
        # back to undecided: the table goes, the file stays (cutout reads an empty file as no choices)
        post(served, "/api/hole", {"key": "wave pose.png", "number": 1, "action": None})
        assert tomllib.loads((out / "holes.toml").read_text(encoding="utf-8")) == {}
        post(served, "/api/hole", {"key": "wave pose.png", "number": 1, "action": "cut"})
        post(served, "/api/hole", {"key": "wave2.png", "number": 1, "action": "keep"})
        post(served, "/api/finish", {})
        served.thread.join(timeout=60)
    finally:
        served.stop()
    assert served.result.get("info"), served.result
    decided = json.loads((out / "review.json").read_text())["items"]
    assert decided["wave pose.png"]["holes"] == {"1": "cut"} and decided["wave2.png"]["holes"] == {"1": "keep"}
    assert tomllib.loads((out / "holes.toml").read_text(encoding="utf-8")) == {"wave pose": {"cut": [1]}, "wave2": {"keep": [1]}}

    again = tmp_path / "cutout-again"
    run_cutout(CutoutConfig(input_dir=cutouts.parent / "subjects", out_dir=again, workers=1, holes_file=out / "holes.toml"),
               Reporter(quiet=True))
    rows = {r["file"]: r for r in manifest_rows(again) if r.get("status") == "ok"}
    first = {h["number"]: h for h in rows["wave pose.png"]["holes"]}[1]
    assert (first["action"], first["by"]) == ("cut", "holes file")
    kept = {h["number"]: h for h in rows["wave2.png"]["holes"]}[1]
    assert (kept["action"], kept["by"], kept["flagged"]) == ("kept", "holes file", False)


def test_the_large_view_numbers_the_regions_and_a_key_decides_one(tmp_path, cutouts, page_of):
    from playwright.sync_api import expect

    from review_support import Review

    out = tmp_path / "reviewed"
    review = Review(cutouts, out)
    try:
        page = page_of(review.url)
        assert page.locator(".card").first.get_attribute("data-key") == "wave pose.png"
        page.keyboard.press("Enter")
        page.wait_for_selector("#viewer:not([hidden]) img")
        assert page.locator("#viewer .panel").count() == 2  # on a checkerboard and on dark
        labels = page.locator("#viewer .panel").first.locator("svg text")
        expect(labels.first).to_have_text("1")  # the outline is numbered as in the cutout manifest
        page.keyboard.press("1")  # kept by the cut-out: the key cuts it
        expect(page.locator("#status")).to_contain_text("holes.toml")
        assert tomllib.loads((out / "holes.toml").read_text(encoding="utf-8")) == {"wave pose": {"cut": [1]}}
        page.keyboard.press("Escape")
        page.click("#finish")
        page.wait_for_selector("#finished")
        assert review.wait()[0] == 0
    finally:
        review.kill()
    assert json.loads((out / "review.json").read_text())["items"]["wave pose.png"]["holes"] == {"1": "cut"}
