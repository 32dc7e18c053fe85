"""Benchmark `datakit tag` against the reference pattern on a WD14-sized ONNX graph, in one run.

    .venv/bin/python benchmarks/tag.py [--quick] [--images N] [--width W] [--device cpu|cuda]

The graph is a ConvNeXt (stages of depthwise 7x7 conv + LayerNorm + MLP, 448x448 NHWC input,
10,861 sigmoid outputs like the WD14 v2/v3 taggers) with random weights: speed does not depend on
the weights. On a small CPU the default stage widths are halved from ConvNeXt-Tiny (48-384 instead of
96-768) so the whole run stays near two minutes; `--width 96` is Tiny, the WD14 ConvNeXt is wider still.

Reference: kohya-ss/sd-scripts (commit 48d368f) `finetune/tag_images_by_wd14_tagger.py` `main`, its
ONNX path as run without --max_data_loader_n_workers: load the model (default session options, the
best provider), then for each batch of --batch_size paths decode + preprocess every image in turn,
stack, run the model, write the captions.

Measured, on the same images and session settings, the methods taking turns in each repeat:
  kohya b1   the reference at its default --batch_size 1
  kohya b4   the reference at --batch_size 4, as kohya's docs (docs/wd14_tagger_README-en.md) run it
  datakit    the whole `run_tag` stage (--force): model load, batched inference with decoding and
             preprocessing in a thread pool while the model runs, hard links, captions, manifest,
             tags.parquet, frequency table
  model only pure inference throughput at datakit's batch size on ready arrays, warm session (the ceiling)
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from datakit.console import Reporter  # noqa: E402
from datakit.models import taggers  # noqa: E402
from datakit.stages.tag import TagConfig, run_tag  # noqa: E402
from harness import Results, Row, machine, print_rows, write_results  # noqa: E402

N_TAGS = 10861  # wd-v1-4 / v3 label count: 4 ratings + general + character


def build_model(folder: Path, width: int, size: int = 448) -> Path:
    """Export a random-weight ConvNeXt tagger (NHWC in, sigmoid out) + a matching selected_tags.csv."""
    import warnings

    import torch
    from torch import nn

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter is "legacy" but exact

    class Block(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x):  # NCHW
            y = self.dw(x).permute(0, 2, 3, 1)
            return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)

    class ConvNeXt(nn.Module):
        def __init__(self, dims, depths=(3, 3, 9, 3)):
            super().__init__()
            layers = [nn.Conv2d(3, dims[0], 4, stride=4)]
            for i, (d, n) in enumerate(zip(dims, depths)):
                if i:
                    layers.append(nn.Conv2d(dims[i - 1], d, 2, stride=2))
                layers += [Block(d) for _ in range(n)]
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(dims[-1], N_TAGS)

        def forward(self, x):  # NHWC 0..255, as WD14 models take it
            x = self.body(x.permute(0, 3, 1, 2) / 255.0)
            return torch.sigmoid(self.head(x.mean(dim=(2, 3))))

    torch.manual_seed(0)
    model = ConvNeXt([width, 2 * width, 4 * width, 8 * width]).eval()
    with torch.no_grad():  # like a trained tagger: most tags near 0, a few dozen likely per image
        model.head.bias.normal_(-6.0, 2.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (torch.zeros(1, size, size, 3),), str(folder / "model.onnx"), input_names=["input_1"],
        output_names=["predictions_sigmoid"], dynamic_axes={"input_1": {0: "batch"}, "predictions_sigmoid": {0: "batch"}},
        dynamo=False, opset_version=17,
    )
    with open(folder / "selected_tags.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i in range(N_TAGS):
            cat = 9 if i < 4 else (4 if i >= N_TAGS - 2000 else 0)
            w.writerow([i, f"tag_{i}", cat, N_TAGS - i])
    return folder


def make_images(folder: Path, n: int) -> list[Path]:
    """Photo-sized inputs of the kinds users feed a tagger: JPEGs and transparent PNGs, odd sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = [(1024, 768), (832, 1216), (1200, 900), (700, 1000)][i % 4]
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 255 // (w + h))], -1).astype(np.uint8)
        noise = rng.integers(0, 40, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        rgb = base + noise[:h, :w]
        if i % 4 == 3:
            alpha = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 2.2) ** 2, 255, 0).astype(np.uint8)
            p = folder / f"img{i:03d}.png"
            Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(p, compress_level=3)
        else:
            p = folder / f"img{i:03d}.jpg"
            Image.fromarray(rgb).save(p, quality=92)
        paths.append(p)
    return paths


def reference_preprocess(path: Path, size: int) -> np.ndarray:
    """The reference's per-image steps (kohya sd-scripts 48d368f), as it runs them."""
    import cv2

    image = Image.open(path)
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if image.mode == "RGBA":
        bg = Image.new("RGB", image.size, (255, 255, 255))
        bg.paste(image, mask=image.split()[3])
        image = bg
    arr = np.array(image)[:, :, ::-1]
    side = max(arr.shape[:2])
    px, py = side - arr.shape[1], side - arr.shape[0]
    arr = np.pad(arr, ((py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)), mode="constant", constant_values=255)
    if side >= size:
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    else:
        pil = Image.fromarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)).resize((size, size), Image.Resampling.LANCZOS)
        arr = cv2.cvtColor(np.array(pil), cv2.COLOR_RGB2BGR)
    return arr.astype(np.float32)


def run_reference(paths: list[Path], model: Path, device: str, out: Path, batch: int = 1) -> float:
    """Load the model, then per batch of paths: decode + preprocess each, stack, infer; captions written (in out)."""
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    labels = taggers.read_labels(model / "selected_tags.csv")
    # As the reference creates it: default session options, the best provider listed.
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(model / "model.onnx"), providers=providers)
    name = sess.get_inputs()[0].name
    size = sess.get_inputs()[0].shape[1]
    for start in range(0, len(paths), batch):
        group = paths[start:start + batch]
        imgs = np.stack([reference_preprocess(p, size) for p in group])
        probs = sess.run(None, {name: imgs})[0][: len(group)]
        for p, prob in zip(group, probs):
            general = [labels.names[i] for i in labels.general if prob[i] >= 0.35]
            (out / f"{p.stem}.txt").write_text(", ".join(general) + "\n")


def run_ours(src: Path, out: Path, model: Path, batch: int, device: str) -> None:
    run_tag(TagConfig(input_dir=src, out_dir=out, model=str(model), batch_size=batch, device=device, force=True, top=0),
            Reporter(quiet=True))


def run_model_only(session: taggers.TaggerSession, n: int, batch: int) -> None:
    arrays = np.full((batch, session.size, session.size, 3), 200.0, np.float32)
    done = 0
    while done < n:
        k = min(batch, n - done)
        session.run(arrays[:k])
        done += k


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads): CPU time is what a busy neighbour cannot skew."""
    w, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and one repeat (a smoke run)")
    ap.add_argument("--images", type=int, default=None, help="number of images (default 128: a realistic set, so per-run start-up does not dominate; 8 with --quick)")
    ap.add_argument("--width", type=int, default=48, help="ConvNeXt first-stage width (96 = ConvNeXt-Tiny)")
    ap.add_argument("--batch-size", type=int, default=None, help="datakit batch size (default: the stage's default)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="onnxruntime device")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per method, best kept (default 2; 1 with --quick)")
    args = ap.parse_args()
    started, m0 = time.perf_counter(), machine()
    n = args.images or (8 if args.quick else 128)
    repeats = args.repeats or (1 if args.quick else 2)

    with tempfile.TemporaryDirectory(prefix="datakit-bench-tag-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model = build_model(tmp / "model", args.width)
        paths = make_images(tmp / "in", n)
        print(f"built a ConvNeXt tagger (widths {args.width}-{8 * args.width}, 448px, {N_TAGS} tags) "
              f"and {n} images in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPU cores")
        files = taggers.resolve_tagger(str(model))
        labels = taggers.read_labels(files.labels)
        session = taggers.open_session(files, labels, device=args.device)
        batch = args.batch_size or (32 if session.on_gpu else 4)
        print(f"provider: {session.provider}; datakit batch {batch}")
        # Warm-up: first runs allocate memory and pick kernels.
        session.run(np.zeros((1, 448, 448, 3), np.float32))
        session.run(np.zeros((min(batch, n), 448, 448, 3), np.float32))

        results: dict[str, list[tuple[float, float]]] = {"ref1": [], "ref4": [], "ours": [], "pure": []}
        for r in range(repeats):  # interleaved, so a busy neighbour hurts all alike
            results["ref1"].append(timed(run_reference, paths, model, args.device, tmp / f"ref1_{r}", 1))
            results["ref4"].append(timed(run_reference, paths, model, args.device, tmp / f"ref4_{r}", 4))
            results["ours"].append(timed(run_ours, tmp / "in", tmp / f"ours{r}", model, batch, args.device))
            results["pure"].append(timed(run_model_only, session, n, batch))
    wall = {k: min(w for w, _ in v) for k, v in results.items()}
    cpu = {k: min(c for _, c in v) for k, v in results.items()}

    print()
    print(f"{'method':<42} {'images/s':>9} {'vs b1':>7} {'CPU s/image':>12} {'vs b1':>7}")
    print("-" * 81)
    names = {"ref1": "kohya pattern, --batch_size 1 (default)", "ref4": "kohya pattern, --batch_size 4 (its docs)",
             "ours": f"datakit tag (batch {batch}, pipelined)", "pure": f"model only (batch {batch}, no decoding)"}
    for key, name in names.items():
        print(f"{name:<42} {n / wall[key]:>9.2f} {wall['ref1'] / wall[key]:>6.2f}x {cpu[key] / n:>12.3f} {cpu['ref1'] / cpu[key]:>6.2f}x")
    print()
    print(f"datakit reaches {wall['pure'] / wall['ours']:.0%} of pure-inference throughput (best of {repeats} each)")
    device = "CUDA" if args.device == "cuda" else "CPU"
    where = f"ConvNeXt WD14-shaped graph (widths {args.width}-{8 * args.width}), 448 px, {n} images, {device}"
    rows = []
    for key, label in (("ref1", "batch 1 (its default)"), ("ref4", "--batch_size 4 (its docs)")):
        speed = wall[key] / wall["ours"]
        rows.append(Row(case=f"{where}, vs kohya's tagger at {label}",
                        datakit=f"{n / wall['ours']:.3g} img/s, {cpu['ours'] / n:.3f} CPU-s/img ({wall['pure'] / wall['ours']:.0%} of pure inference)",
                        baseline=f"kohya's loop at {label}: {n / wall[key]:.3g} img/s, {cpu[key] / n:.3f} CPU-s/img",
                        goal="never slower", result=f"{speed:.2f}x", met=speed >= 1.0))
    print_rows(rows)
    write_results(Results(
        benchmark="tag", title="datakit tag vs kohya's WD14 tagger loop (batch 1 and 4)",
        settings={"images": n, "width": args.width, "datakit_batch": batch, "device": args.device, "repeats": repeats,
                  "provider": session.provider},
        rows=rows,
        measurements={k: {"images_per_s": round(n / wall[k], 3), "cpu_s_per_image": round(cpu[k] / n, 4),
                          "runs": [[round(w, 3), round(c, 3)] for w, c in v]} for k, v in results.items()},
        notes=[f"best of {repeats} interleaved repeats; wall time includes the model load for the kohya loops and datakit"],
        quick=args.quick), started=started, machine_at_start=m0)


if __name__ == "__main__":
    main()
