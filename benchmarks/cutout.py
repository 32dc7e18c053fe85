"""Benchmark: `datakit cutout --method flat` on 1024 px images vs decoding + re-encoding them as PNG.

The baseline is the I/O floor of any stage that reads and writes images: open each input with the
same safe loader and write it with the same PNG encoder (OpenCV, same compression level). Both run
through the same process pool with 1 and 2 workers, in this one run, on the same images, the runs
of the two alternating so that both meet the same load from other processes (best of each kept).
Goal: cutout time / baseline time <= 2.

    .venv/bin/python benchmarks/cutout.py [--quick] [--count N] [--size PX] [--repeats N] [--inputs DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datakit.console import Reporter  # noqa: E402
from datakit.imageio import open_image, save_png_array_atomic  # noqa: E402
from datakit.stage import Task, TaskResult, parallel_map  # noqa: E402
from datakit.stages.cutout import CutoutConfig, run_cutout  # noqa: E402
from harness import Results, Row, machine, write_results  # noqa: E402

BACKDROPS = ["white", "offwhite", "grey", "gradient", "vignette"]


def draw(size: int, i: int) -> np.ndarray:
    """A cel-shaded figure with outlines, a white shirt, strands and an arm loop, anti-aliased."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    kind = BACKDROPS[i % len(BACKDROPS)]
    base = {"white": 255, "offwhite": 248, "grey": 210, "gradient": 250, "vignette": 250}[kind]
    img = np.full((size, size, 3), base, np.float32)
    if kind == "gradient":
        img -= (30 * yy)[..., None]
    if kind == "vignette":
        img -= (60 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    s = size / 256
    ol = (50, 30, 40)
    lw = max(2, int(3 * s))
    dx = int(rng.integers(-20, 20) * s)

    def P(x, y):
        return (int((x * s) + dx), int(y * s))

    def ell(c, ax, fill):
        cv2.ellipse(img, P(*c), (int(ax[0] * s), int(ax[1] * s)), 0, 0, 360, fill, -1, cv2.LINE_AA)
        cv2.ellipse(img, P(*c), (int(ax[0] * s), int(ax[1] * s)), 0, 0, 360, ol, lw, cv2.LINE_AA)

    ell((182, 155), (32, 35), (250, 214, 180))  # arm ring
    cv2.ellipse(img, P(182, 155), (int(16 * s), int(19 * s)), 0, 0, 360, (base,) * 3, -1, cv2.LINE_AA)
    cv2.ellipse(img, P(182, 155), (int(16 * s), int(19 * s)), 0, 0, 360, ol, lw, cv2.LINE_AA)
    ell((128, 165), (48, 65), (236, 236, 246))  # body, a light shirt
    ell((128, 75), (50, 45), (250, 214, 180))  # head
    for ex in (112, 144):
        ell((ex, 76), (8, 10), (255, 255, 255))
    cv2.line(img, P(128, 30), P(112, 6), ol, max(1, int(s)), cv2.LINE_AA)
    cv2.line(img, P(134, 30), P(158, 8), ol, max(1, int(2 * s)), cv2.LINE_AA)
    return img


def make_inputs(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        save_png_array_atomic(draw(size, i), folder / f"img{i:03d}.png")


def _copy_one(task: Task, shared) -> TaskResult:
    arr = np.asarray(open_image(task.payload).image)
    save_png_array_atomic(arr, shared / f"{Path(task.payload).stem}.png")
    return TaskResult(key=task.key, outputs=[Path(task.payload).name])


def baseline(inp: Path, out: Path, workers: int) -> float:
    """Seconds to decode + re-encode every image as PNG through the same pool."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = [Task(key=p.name, payload=p) for p in sorted(inp.glob("*.png"))]
    t0 = time.perf_counter()
    for r in parallel_map(_copy_one, tasks, workers=workers, shared=out):
        assert r.status == "ok", r.reason
    return time.perf_counter() - t0


def cutout(inp: Path, out: Path, workers: int) -> float:
    """Seconds for the cutout stage (flat method, forced, quiet), end to end."""
    cfg = CutoutConfig(input_dir=inp, out_dir=out, method="flat", workers=workers, force=True)
    t0 = time.perf_counter()
    info = run_cutout(cfg, Reporter(json_mode=True))  # json mode: no progress bar, no messages
    assert info["counts"]["failed"] == 0 and info["counts"]["skipped"] == 0, info
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (about 20 s)")
    ap.add_argument("--count", type=int, default=None, help="number of images (default 24, quick 8)")
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats, best kept (default 3, quick 2)")
    ap.add_argument("--inputs", type=Path, default=None,
                    help="use these images (e.g. samples/subjects), repeated up to --count, instead of drawn ones")
    args = ap.parse_args()
    count = args.count or (8 if args.quick else 24)
    repeats = args.repeats or (2 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="datakit-bench-cutout-"))
    try:
        inp = tmp / "in"
        if args.inputs:
            sources = sorted(p for p in args.inputs.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
            if not sources:
                sys.exit(f"no images in {args.inputs}")
            inp.mkdir(parents=True)
            for i in range(count):
                src = sources[i % len(sources)]
                shutil.copyfile(src, inp / f"img{i:03d}{src.suffix.lower()}")
            label = f"{count} images from {args.inputs}"
        else:
            make_inputs(inp, count, args.size)
            label = f"{count} drawn images of {args.size} px"
        cutout(inp, tmp / "warm", 1)  # warm-up: imports and first-call costs out of the timings
        load_before = os.getloadavg()[0]
        rows = []
        for workers in (1, 2):
            # Baseline and cut-out runs alternate, so that both meet the same load from other processes;
            # the best of each is kept.
            b_times, c_times = [], []
            for r in range(repeats):
                b_times.append(baseline(inp, tmp / f"copy{workers}_{r}", workers))
                c_times.append(cutout(inp, tmp / f"cut{workers}_{r}", workers))
            b, c = min(b_times), min(c_times)
            rows.append((workers, count / b, count / c, 1000 * c / count, c / b))
        print(f"\ncutout --method flat, {label}, best of {repeats}")
        print(f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"{'workers':>7}  {'decode+PNG img/s':>16}  {'cutout img/s':>12}  {'cutout ms/img':>13}  {'ratio (goal <= 2)':>17}")
        for workers, brate, crate, ms, ratio in rows:
            print(f"{workers:>7}  {brate:>16.2f}  {crate:>12.2f}  {ms:>13.1f}  {ratio:>17.2f}")
        write_results(Results(
            benchmark="cutout", title="datakit cutout --method flat vs decode + PNG re-encode", quick=args.quick,
            settings={"images": count, "size": args.size, "inputs": str(args.inputs or "drawn"), "repeats": repeats},
            rows=[Row(case=f"`--method flat`, {label}, {w} worker{'s' if w > 1 else ''}", datakit=f"{crate:.1f} img/s",
                      baseline=f"decode + PNG re-encode: {brate:.1f} img/s", goal="time ratio <= 2", result=f"{ratio:.2f}",
                      met=ratio <= 2) for w, brate, crate, ms, ratio in rows],
            measurements={"rows": [dict(zip(("workers", "baseline_img_s", "cutout_img_s", "cutout_ms", "ratio"), r)) for r in rows]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
