"""Benchmark `datakit review`: how long until the page is usable, a decision, a save; against what a user
looks at today, in the same run and the same browser.

    .venv/bin/python benchmarks/review.py [--quick] [--items 100] [--large 1000]

Data: `--items` composites made as the pipeline makes them (drawn subjects -> `cutout` ->
`composite --bg-count N` with procedural backgrounds, 512x512 -> `tag --model none`), and a plain
folder of `--large` JPEGs with captions (no manifest: the review checks every image when it saves).

Measured in Debian's chromium driven by Playwright (as tests/test_review_browser.py does), one
`datakit review IN OUT` process per case, as a user runs it:
  startup     process start -> the address printed (imports, hashing, the manifests along the lineage)
  page        navigation -> the grid drawn and every thumbnail in the first screen decoded (cold)
  thumbnails  the thumbnails below the first screen fetched by the page (cold: made on demand)
  decide      one `x` key -> the card marked rejected (the change goes to the server and the draft)
  save        "Save & finish" with 10 rejections -> OUT written and the process ended

Baseline (what the issue names as today's way to look through the results): `datakit emit` of the same
folder, whose report.html shows every item with its caption but cannot change anything (datakit's own
emit stage, datakit/stages/emit.py `run_emit`; its report is datakit/emit/report.py), timed as the
emit run plus report.html loaded in the same chromium (thumbnails embedded). For the save, `cp -al`
of IN (hard links of every file, as review links kept items) is the floor.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Results, Row, machine, median, print_rows, write_results  # noqa: E402

# Chromium's own network chatter is refused on machines without internet: switch it off.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
REJECTS = 10


def composites(tmp: Path, n: int) -> Path:
    """n composites of drawn subjects on procedural backgrounds, tagged (the folder the pipeline reviews)."""
    from datakit.console import Reporter
    from datakit.stages.composite import CompositeConfig, run_composite
    from datakit.stages.cutout import CutoutConfig, run_cutout
    from datakit.stages.tag import TagConfig, run_tag

    sys.path.insert(0, str(ROOT / "tests"))
    from review_support import figure

    subj = tmp / "subjects"
    subj.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(figure(320, 480, [(200, 60, 60), (60, 90, 200), (60, 170, 80), (180, 120, 40)][i], seed=i)).save(subj / f"pose{i}.png")
        (subj / f"pose{i}.txt").write_text("sail kun, 1girl, solo, white background, simple background, full body\n")
    quiet = Reporter(quiet=True)
    run_cutout(CutoutConfig(input_dir=subj, out_dir=tmp / "cutout", workers=1), quiet)
    run_composite(CompositeConfig(input_dir=tmp / "cutout", out_dir=tmp / "composite", bg_count=n, width=512, height=512,
                                  workers=1, contact_sheet=False), quiet)
    run_tag(TagConfig(input_dir=tmp / "composite", out_dir=tmp / "tagged", model="none", workers=1), quiet)
    return tmp / "tagged"


def plain(tmp: Path, n: int) -> Path:
    """n 512x512 JPEGs (smooth noise, each different) with captions, no manifest."""
    folder = tmp / "plain"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    words = ["1girl", "solo", "smile", "outdoors", "sky", "cloud", "tree", "grass", "long hair", "short hair", "hat", "dress"]
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((512, 512), Image.BICUBIC).save(folder / f"img{i:04d}.jpg", quality=90)
        tags = ["sail kun"] + list(rng.choice(words, size=5, replace=False))
        (folder / f"img{i:04d}.txt").write_text(", ".join(tags) + "\n")
    return folder


def start_review(src: Path, out: Path) -> tuple[subprocess.Popen, str, float]:
    """`datakit review IN OUT` as a user runs it; (process, address, seconds until the address was printed)."""
    env = dict(os.environ, COLUMNS="200", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "datakit", "review", str(src), str(out)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    for line in proc.stderr:
        m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
        if m:
            return proc, m.group(1), time.perf_counter() - t0
    raise RuntimeError(f"datakit review printed no address (exit {proc.wait()})")


FIRST_SCREEN = """() => {
  const vh = window.innerHeight;
  const imgs = [...document.querySelectorAll('#grid .card img')].filter((i) => i.getBoundingClientRect().top < vh);
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}"""

REST_THUMBS = """async () => {
  // The thumbnails the page has not loaded yet (lazy: below the first screen), fetched as the page would.
  const rest = [...document.querySelectorAll('#grid .card img')].filter((i) => !i.complete || !i.naturalWidth).map((i) => i.src);
  const t0 = performance.now();
  await Promise.all(rest.map((src) => fetch(src).then((r) => r.arrayBuffer())));
  return [rest.length, (performance.now() - t0) / 1000];
}"""

def review_case(browser, src: Path, tmp: Path, n: int, label: str) -> dict:
    """One review session: startup, first screen, all thumbnails, decisions, save & finish."""
    out = tmp / f"reviewed-{label}"
    proc, url, startup = start_review(src, out)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        ready = time.perf_counter() - t0
        page.wait_for_function(FIRST_SCREEN, timeout=120_000)
        first_screen = time.perf_counter() - t0
        cards = page.locator("#grid .card").count()
        rest, thumbs = page.evaluate(REST_THUMBS)
        decide = []
        for k in range(REJECTS):
            t1 = time.perf_counter()
            page.keyboard.press("x")  # rejects the focused item and moves on
            page.wait_for_function("(k) => document.querySelectorAll('.card[data-action=reject]').length === k", arg=k + 1)
            decide.append(time.perf_counter() - t1)
        t2 = time.perf_counter()
        page.click("#finish")
        page.wait_for_selector("#finished", timeout=300_000)
        code = proc.wait(timeout=300)
        save = time.perf_counter() - t2
        page.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0 and cards == n, (code, cards, n)
    return {"startup_s": startup, "page_ready_s": ready, "first_screen_s": first_screen, "rest_thumbs": rest, "rest_thumbs_s": thumbs,
            "decide_s": decide, "decide_median_s": median(decide), "save_s": save}


def emit_case(browser, src: Path, tmp: Path, label: str) -> dict:
    """The baseline: `datakit emit` of the folder, then its report.html loaded in the same browser."""
    out = tmp / f"emitted-{label}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "datakit", "emit", str(out), "--concept", f"sail={src}", "--quiet"],
                   check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    emit_s = time.perf_counter() - t0
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    t1 = time.perf_counter()
    page.goto((out / "report.html").as_uri(), wait_until="load")
    load_s = time.perf_counter() - t1
    page.close()
    size = (out / "report.html").stat().st_size
    copy = tmp / f"copy-{label}"
    t2 = time.perf_counter()
    subprocess.run(["cp", "-al", str(src), str(copy)], check=True)
    cp_s = time.perf_counter() - t2
    return {"emit_s": emit_s, "report_load_s": load_s, "report_bytes": size, "cp_al_s": cp_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100, help="composites (default 100, as composite --bg-count 100)")
    ap.add_argument("--large", type=int, default=1000, help="plain images in the large case (0: none)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 12 composites, 40 plain images")
    args = ap.parse_args()
    if args.quick:
        args.items, args.large = 12, 40
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.isfile(CHROMIUM):
        print(f"review benchmark skipped: it needs Playwright for Python (datakit[dev]) and Debian's chromium at {CHROMIUM}")
        return

    started = time.perf_counter()
    at_start = machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    try:
        cases = [("composites", composites(tmp, args.items), args.items)]
        if args.large:
            cases.append(("plain", plain(tmp, args.large), args.large))
        measured: dict = {}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for label, src, n in cases:
                measured[label] = {"items": n, "review": review_case(browser, src, tmp, n, label),
                                   "baseline": emit_case(browser, src, tmp, label)}
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for label, m in measured.items():
        r, b, n = m["review"], m["baseline"], m["items"]
        what = f"{n} composites, 512 px" if label == "composites" else f"{n} plain JPEGs, 512 px"
        rows.append(Row(case=f"{what}: page usable (start + first screen)",
                        datakit=f"{r['startup_s'] + r['first_screen_s']:.2f} s (start {r['startup_s']:.2f} s, first screen {r['first_screen_s']:.2f} s)",
                        baseline=f"emit + report.html: {b['emit_s'] + b['report_load_s']:.2f} s (report {b['report_bytes'] / 2**20:.1f} MiB, read-only)"))
        rows.append(Row(case=f"{what}: the thumbnails below the first screen, cold",
                        datakit=f"{r['rest_thumbs']} in {r['rest_thumbs_s']:.2f} s ({r['rest_thumbs'] / max(r['rest_thumbs_s'], 1e-9):.0f} /s)",
                        baseline="emit: made while report.html is written (in the emit time above)"))
        rows.append(Row(case=f"{what}: one decision (x key -> marked, draft written)",
                        datakit=f"{r['decide_median_s'] * 1000:.0f} ms median of {REJECTS}", baseline="—"))
        rows.append(Row(case=f"{what}: Save & finish ({REJECTS} rejected)",
                        datakit=f"{r['save_s']:.2f} s", baseline=f"cp -al of IN: {b['cp_al_s']:.2f} s"))
    res = Results(benchmark="review", title="datakit review: page, decisions, save vs emit's report.html",
                  settings={"items": args.items, "large": args.large, "rejects": REJECTS, "browser": CHROMIUM,
                            "viewport": "1280x800"},
                  rows=rows, measurements=measured, quick=args.quick,
                  notes=["The baseline is read-only: report.html shows the items but cannot reject one or change a caption."])
    print_rows(rows)
    write_results(res, started=started, machine_at_start=at_start)


if __name__ == "__main__":
    main()
