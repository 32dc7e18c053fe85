"""Shared set-up of the review tests: drawn datasets (a plain folder, a real cutout -> composite -> tag
chain) and the review stage's server run in a background thread."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datakit.console import Reporter
from datakit.stages.review import ReviewConfig, run_review

ROOT = Path(__file__).resolve().parents[1]


def figure(w: int, h: int, colour, *, alpha: bool = False, seed: int = 0) -> np.ndarray:
    """A head-and-body figure with an outline on white (or transparent), a little noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 255, np.uint8)
    cx = w // 2 + int(rng.integers(-w // 10, w // 10 + 1))
    cv2.circle(img, (cx, h // 4), max(4, h // 8), colour, -1)
    cv2.rectangle(img, (cx - w // 6, h // 4 + h // 8), (cx + w // 6, h - h // 10), colour, -1)
    cv2.rectangle(img, (cx - w // 6, h // 4 + h // 8), (cx + w // 6, h - h // 10), (30, 30, 30), 2)
    if not alpha:
        return img
    a = np.where((img == 255).all(axis=2), 0, 255).astype(np.uint8)
    return np.dstack([img, a])


CAPTIONS = [
    "sail kun, 1girl, solo, smile, outdoors",
    "sail kun, 1girl, long_hair, \\(cosplay\\), beach",
    "sail kun, 1boy, ^_^, indoors, chair",
    "sail kun, 1girl, full body, white background, simple background",
    "sail kun, solo, sky, cloud",
    "sail kun, 1girl, night, city",
]


def plain_folder(folder: Path, n: int = 6) -> Path:
    """A user's own folder: PNG, JPEG and RGBA images of different sizes, captions (one .caption, one missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(96, 128), (160, 120), (128, 128), (200, 150), (120, 180), (144, 96)]
    colours = [(200, 60, 60), (60, 160, 90), (70, 90, 210), (220, 170, 40), (150, 70, 180), (40, 170, 190)]
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        arr = figure(w, h, colours[i % len(colours)], alpha=(i % 3 == 2), seed=i)
        name = f"item{i:02d}"
        if i % 3 == 1:
            Image.fromarray(arr).save(folder / f"{name}.jpg", quality=90)
        else:
            Image.fromarray(arr).save(folder / f"{name}.png")
        if i == n - 1:
            continue  # no caption
        ext = ".caption" if i == 4 else ".txt"
        (folder / f"{name}{ext}").write_text(CAPTIONS[i % len(CAPTIONS)] + "\n")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under a folder: (size, mtime, bytes), to show that nothing in it changed."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, p.read_bytes())
    return out


def chain(tmp: Path, subjects: int = 2, backgrounds: int = 3) -> dict[str, Path]:
    """A real cutout -> composite -> tag chain on drawn subjects, small and fast."""
    from datakit.stages.composite import CompositeConfig, run_composite
    from datakit.stages.cutout import CutoutConfig, run_cutout
    from datakit.stages.tag import TagConfig, run_tag

    subj = tmp / "subjects"
    subj.mkdir(parents=True)
    for i in range(subjects):
        Image.fromarray(figure(120, 180, [(200, 60, 60), (60, 90, 200), (60, 170, 80)][i % 3], seed=i)).save(subj / f"pose{i}.png")
        (subj / f"pose{i}.txt").write_text("sail kun, 1girl, solo, white background, simple background, full body\n")
    bgs = tmp / "bgs"
    bgs.mkdir()
    for i in range(backgrounds):
        img = np.zeros((128, 128, 3), np.uint8)
        img[:80] = (40, 110 + 20 * i, 200)
        img[80:] = (50, 140, 40 + 20 * i)
        Image.fromarray(img).save(bgs / f"bg{i:03d}.png")
        (bgs / f"bg{i:03d}.txt").write_text("outdoors, grass, blue sky\n")
    quiet = Reporter(quiet=True)
    run_cutout(CutoutConfig(input_dir=subj, out_dir=tmp / "cutout", workers=1), quiet)
    run_composite(CompositeConfig(input_dir=tmp / "cutout", out_dir=tmp / "composite", backgrounds=bgs, width=128,
                                  height=128, workers=1, contact_sheet=False), quiet)
    run_tag(TagConfig(input_dir=tmp / "composite", out_dir=tmp / "tagged", model="none", workers=1), quiet)
    return {"subjects": subj, "cutout": tmp / "cutout", "composite": tmp / "composite", "tagged": tmp / "tagged"}


def manifest_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines() if line.strip()]


@dataclass
class Served:
    """A review session served from a background thread."""

    url: str
    token: str
    port: int
    running: object
    thread: threading.Thread
    result: dict

    def stop(self) -> None:
        self.running.stop()
        self.thread.join(timeout=30)


def serve_in_thread(in_dir: Path, out_dir: Path, **kw) -> Served:
    """Start `run_review` (browser mode) in a thread; returns once the server listens."""
    ready = threading.Event()
    box: dict = {}
    result: dict = {}

    def on_ready(running):
        box["running"] = running
        ready.set()

    def target():
        try:
            result["info"] = run_review(ReviewConfig(input_dir=in_dir, out_dir=out_dir, **kw), Reporter(quiet=True),
                                        on_ready=on_ready)
        except BaseException as exc:  # noqa: BLE001 - reported to the test through `result`
            result["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in result:
        raise result["error"]
    r = box["running"]
    return Served(url=r.url, token=r.token, port=r.port, running=r, thread=thread, result=result)


def under_ci() -> bool:
    """CI=true (GitHub, GitLab, .ci/run) or any other value but an explicit 0/false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class Review:
    """`datakit review IN OUT` running as a subprocess; its address read from what it prints."""

    def __init__(self, in_dir: Path, out_dir: Path, *extra: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), COLUMNS="200")
        self.proc = subprocess.Popen([sys.executable, "-m", "datakit", "review", str(in_dir), str(out_dir), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.lines = []
        self.url = None
        for line in self.proc.stderr:  # the address is the first thing it prints
            self.lines.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+/\?token=[\w-]+)", line)
            if m:
                self.url = m.group(1)
                break
        assert self.url, "".join(self.lines)

    def wait(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, out, "".join(self.lines) + err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
