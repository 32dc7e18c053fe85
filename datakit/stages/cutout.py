"""`datakit cutout`: RGBA cut-outs (straight alpha) of subjects, trimmed, captions passed through.

Per item: open safely -> pick the method (flat backdrop, rembg mask, the flat matte with a
segmenter deciding enclosed regions, or the input's own alpha) -> matte, decontaminate, bleed,
trim (datakit.cutout) -> OUT/<stem>.png + the caption hard-linked -> a manifest row with the crop
box, method, backdrop colour, enclosed regions, alpha coverage, confidence and warnings. Last,
OUT/review.png shows every cut-out and every decision about an enclosed region.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np

from datakit.console import Reporter
from datakit.errors import ImageError, UsageError
from datakit.imageio import link_or_copy, open_image, save_png_array_atomic
from datakit.inputs import discover
from datakit.results import Record, StageResult
from datakit.stage import StageRun, Task, TaskResult, default_workers

METHODS = ("flat", "rembg", "auto")
REVIEW = "review.png"
# Reduced copies of the cut-outs for review.png, written by the workers (one per item).
REVIEW_DIR = ".review"
# Upstream manifest fields worth keeping on our rows (the rest is the upstream stage's bookkeeping).
_CARRIED_FIELDS = ("tags",)


@dataclass
class CutoutConfig:
    """Options of `datakit cutout` (see docs/cutout.md)."""

    input_dir: Path
    out_dir: Path
    method: str = "flat"  # flat | rembg | auto
    model: str | None = None  # rembg model name or .onnx path; None: $DATAKIT_REMBG_MODEL
    holes: str = "auto"  # auto | keep | cut
    threshold: float | None = None
    matting: bool = False
    trim: bool = True
    margin: int = 8
    device: str = "auto"
    seed: int = 0
    workers: int | None = None
    force: bool = False
    holes_file: Path | None = None  # holes.toml: regions to cut or keep, per image stem
    review: bool = True  # write OUT/review.png


@dataclass
class Segmenter(Record):
    """The segmenter a run loaded: its model and the ONNX Runtime providers it ran on."""

    model: str = ""
    providers: list[str] | None = None


@dataclass(kw_only=True)
class CutoutResult(StageResult):
    """What a cutout run did: the common counts plus the method and, when a model ran, the segmenter."""

    method: str = "flat"
    holes_file: str | None = None  # the holes.toml that decided enclosed regions, if any
    review: str | None = None  # the review sheet written in OUT (None when --no-review)
    segmenter: Segmenter | None = None  # only when the run loaded one (rembg, or auto that needed it)

    WRITTEN_WHEN_SET: ClassVar[frozenset[str]] = frozenset({"segmenter"})


class NeedsModel(ImageError):
    """--method auto met an image whose border is not a flat backdrop and no model was named."""

    reason = "needs a segmenter model"


@dataclass
class _Shared:
    """What every task needs: the options and, for rembg, which segmenter to use (picklable)."""

    method: str
    options: object  # datakit.cutout.cut.CutOptions
    segmenter: object | None  # datakit.models.segmenters.SegmenterSpec
    review: bool = True  # leave a reduced copy of each cut-out for review.png


def _segmenter(shared: _Shared):
    from datakit.models.segmenters import get_segmenter

    return get_segmenter(shared.segmenter)


def cut_one(rgb: np.ndarray, shared: _Shared, choice=None):
    """Cut one RGB image with the configured method (auto measures the border first).

    With a segmenter named, a flat backdrop gets the flat matte (its exact edge) and the segmenter
    decides the enclosed regions (a hybrid); any other backdrop gets the segmenter's mask.
    `choice` is the user's holes-file entry for this image.
    """
    from datakit.cutout.backdrop import estimate_backdrop
    from datakit.cutout.cut import cut_flat, cut_with_mask
    from datakit.cutout.holes import HoleEvidence

    method = shared.method
    model = None
    if method == "auto":
        model = estimate_backdrop(rgb)
        if model.is_flat():
            method = "flat"
        elif shared.segmenter is not None:
            method = "rembg"
        else:
            raise NeedsModel(
                f"the border is not one flat backdrop ({model.flatness_problem()}): "
                "use --method flat to cut it anyway, or --method rembg --model NAME_OR_PATH (or set DATAKIT_REMBG_MODEL)"
            )
    if method == "flat":
        if shared.segmenter is None:
            return cut_flat(rgb, shared.options, HoleEvidence(choice=choice), backdrop=model)
        mask = _segmenter(shared).predict(rgb)
        evidence = HoleEvidence(choice=choice, mask=mask, model=shared.segmenter.name)
        cut = cut_flat(rgb, shared.options, evidence, backdrop=model)
        cut.info["method"] = f"flat+rembg:{shared.segmenter.name}"
        return cut
    seg = _segmenter(shared)
    mask = seg.predict(rgb)
    return cut_with_mask(rgb, mask, shared.options, method=f"rembg:{shared.segmenter.name}")


def process_one(task: Task, shared: _Shared) -> TaskResult:
    """Cut out one image and pass its caption through (runs in pool workers)."""
    import cv2

    from datakit.cutout.memory import keep_freed_buffers

    keep_freed_buffers()  # reuse image-sized buffers between images (see datakit.cutout.memory)
    # A cut-out is ~100 short OpenCV calls: handing each to OpenCV's thread pool costs more than it
    # gains (measured on 2 cores: a third more CPU time and a slower run). Pool workers are
    # single-threaded already; this makes in-process runs (--workers 1) the same.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return _process_one(task, shared)
    finally:
        cv2.setNumThreads(threads)


def _process_one(task: Task, shared: _Shared) -> TaskResult:
    from datakit.cutout.cut import NoSubjectFound, from_existing_alpha
    from datakit.cutout.holes import unknown_numbers
    from datakit.cutout.holes_file import HoleChoice
    from datakit.cutout.review import save_copy

    src: Path = task.payload["path"]
    stem: str = task.params["stem"]
    loaded = open_image(src)
    arr = np.asarray(loaded.image)
    notes = list(loaded.notes)
    # Free the decoder's copy of the image before the cut allocates its own buffers: a lower peak,
    # and freed memory that malloc can hand to the next image instead of back to the OS.
    del loaded
    # An input that already has a transparent backdrop keeps its alpha: cutting it again would only
    # damage it. Alpha that is opaque everywhere carries no information, so it is dropped.
    choice = HoleChoice(**task.params["holes"]) if "holes" in task.params else None
    if arr.shape[2] == 4 and arr[:, :, 3].min() < 250:
        cut = from_existing_alpha(arr, shared.options)
    else:
        try:
            cut = cut_one(np.ascontiguousarray(arr[:, :, :3]), shared, choice)
        except NoSubjectFound as exc:
            raise ImageError(str(exc)) from exc
    missing = unknown_numbers(choice, len(cut.info.get("holes") or []))
    if missing:
        count = len(cut.info.get("holes") or [])
        cut.warnings.append(
            f"the holes file names region{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))}, "
            f"but this image has {count} enclosed region{'' if count == 1 else 's'}"
        )
    out_name = f"{stem}.png"
    save_png_array_atomic(cut.rgba, task.payload["out"] / out_name)
    if shared.review:
        save_copy(cut.rgba, task.payload["out"] / REVIEW_DIR / f"{stem}.npy")
    outputs = [out_name]
    caption = task.payload.get("caption")
    if caption is not None:
        cap_name = f"{stem}{Path(caption).suffix}"
        link_or_copy(caption, task.payload["out"] / cap_name)
        outputs.append(cap_name)
    row = dict(cut.info)
    row.update(task.payload.get("carried", {}))
    return TaskResult(key=task.key, outputs=outputs, row=row, warnings=notes + cut.warnings)


def _config_dict(cfg: CutoutConfig, model_label: str | None) -> dict:
    d = asdict(cfg)
    d["input_dir"] = str(cfg.input_dir)
    d["out_dir"] = str(cfg.out_dir)
    d["model"] = model_label
    # Neither changes a cut-out: the holes file's entry for an image is part of that item's own
    # parameters (editing it redoes only the images whose entry changed); the review is a side file.
    d.pop("holes_file")
    d.pop("review")
    if cfg.method == "flat" and model_label is None:
        d.pop("device")  # the flat method never touches a device: switching it must not redo work
    return d


def run_cutout(cfg: CutoutConfig, reporter: Reporter) -> CutoutResult:
    """Run the cutout stage from IN to OUT; returns the datakit.json info."""
    from datakit.cutout.cut import CutOptions
    from datakit.cutout.holes import HOLE_POLICIES
    from datakit.cutout.holes_file import read_holes
    from datakit.models.segmenters import requested_model, resolve_segmenter

    if cfg.method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {cfg.method!r}")
    if cfg.holes not in HOLE_POLICIES:
        raise UsageError(f"--holes must be one of {', '.join(HOLE_POLICIES)}, not {cfg.holes!r}")
    if cfg.margin < 0:
        raise UsageError("--margin must be 0 or more pixels")
    if cfg.threshold is not None and not 0 < cfg.threshold < 442:
        raise UsageError("--threshold is a colour distance in 8-bit levels: between 0 and 441")
    model = requested_model(cfg.model)
    if cfg.method == "rembg" and model is None:
        raise UsageError(
            "--method rembg needs a model: --model isnet-anime (or u2net, birefnet-general, a path to an .onnx file), "
            "or set DATAKIT_REMBG_MODEL"
        )
    spec = resolve_segmenter(model, cfg.device) if model else None
    choices = read_holes(cfg.holes_file) if cfg.holes_file is not None else {}

    inputs = discover(cfg.input_dir, stage="cutout")
    out = Path(cfg.out_dir)
    config = _config_dict(cfg, spec.label if spec else None)
    run = StageRun(
        "cutout", out, config, inputs_dir=cfg.input_dir, upstream=inputs.upstream, force=cfg.force,
        reporter=reporter, seed=cfg.seed, pre_skipped=inputs.skipped,
    )
    if cfg.review:
        (out / REVIEW_DIR).mkdir(exist_ok=True)
    model_inputs = [Path(spec.path)] if spec and spec.path else []
    tasks = []
    for item in inputs.items:
        files = [item.path, *([item.caption] if item.caption else []), *model_inputs]
        carried = {k: item.row[k] for k in _CARRIED_FIELDS if k in item.row}
        params: dict = {"stem": item.stem}
        if item.stem in choices:
            params["holes"] = choices[item.stem].as_params()
        tasks.append(
            Task(
                key=item.key,
                inputs=files,
                params=params,
                payload={"path": item.path, "caption": item.caption, "out": out, "carried": carried},
                source=item.key,
            )
        )
    if not tasks and not inputs.skipped:
        reporter.warn(f"no images in {cfg.input_dir}")
    stems = {item.stem for item in inputs.items}
    strangers = sorted(set(choices) - stems)
    if strangers:
        shown = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
        reporter.warn(f"the holes file {cfg.holes_file} names images that are not in {cfg.input_dir}: {shown}")
    options = CutOptions(holes=cfg.holes, threshold=cfg.threshold, matting=cfg.matting, trim=cfg.trim, margin=cfg.margin)
    shared = _Shared(method=cfg.method, options=options, segmenter=spec, review=cfg.review)
    # A segmenter session is loaded once and reused: model methods run in this process.
    workers = 1 if spec is not None else (cfg.workers or default_workers())
    result = CutoutResult(method=cfg.method, holes_file=str(cfg.holes_file) if cfg.holes_file else None)
    todo = run.begin(tasks)
    if todo is None:
        if cfg.review and not (out / REVIEW).exists():
            _write_review(run, out)
        return run.summary_from_previous(CutoutResult)
    if spec is not None and cfg.method in ("rembg", "flat") and todo:
        _load_and_report(spec, reporter)  # load before the bar starts, so a bad model fails at once
    run.invalidate()
    run.map(process_one, todo, workers=workers, shared=shared, description="cutout")
    if spec is not None:
        from datakit.models.segmenters import loaded_segmenter

        seg = loaded_segmenter(spec)
        result.segmenter = Segmenter(model=spec.label, providers=seg.providers if seg else None)
        if seg is not None and cfg.method == "auto":  # loaded on first use, by an image that needed it
            reporter.info(f"segmenter {spec.label} runs on {seg.provider}")
            for note in seg.notes:
                reporter.warn(note)
    if cfg.review:
        result.review = REVIEW if _write_review(run, out) else None
    _report_flagged(run, reporter, out, cfg.review)
    result = run.finish(result)
    needs = [r for r in result.skipped if "not one flat backdrop" in r.reason]
    if needs:
        reporter.warn(f"{len(needs)} image(s) need a segmenter: --method rembg --model NAME_OR_PATH")
    unsure = [r["source"] for r in run.rows.values() if r.get("confidence") == "low" and r.get("key") in run.results]
    if unsure:
        shown = ", ".join(unsure[:5]) + (" ..." if len(unsure) > 5 else "")
        reporter.warn(f"{len(unsure)} cut-out(s) with low confidence, check them (manifest 'warnings'): {shown}")
    return result


def _load_and_report(spec, reporter: Reporter) -> None:
    from datakit.models.segmenters import get_segmenter

    seg = get_segmenter(spec)
    reporter.info(f"segmenter {spec.label} runs on {seg.provider}")
    for note in seg.notes:
        reporter.warn(note)


def _write_review(run: StageRun, out: Path) -> int:
    """review.png from every current item (reused ones too), in task order; stale copies removed."""
    from PIL import Image

    from datakit.cutout.review import entry_from_row, load_copy, reduce, render_review

    entries = []
    current = set()
    for task in run.tasks:
        row = run.rows.get(task.key)
        if not row or row.get("status") != "ok" or not row.get("file"):
            continue
        full = out / row["file"]
        small = out / REVIEW_DIR / f"{Path(row['file']).stem}.npy"
        current.add(small.name)
        try:
            fresh = small.is_file() and small.stat().st_mtime_ns >= full.stat().st_mtime_ns
            rgba = load_copy(small) if fresh else None
            if rgba is None:  # no reduced copy (an older run, or deleted): reduce the cut-out itself
                with Image.open(full) as im:
                    rgba, _ = reduce(np.asarray(im.convert("RGBA")))
        except OSError:  # the cut-out itself vanished or is unreadable: nothing to show for it
            continue
        scale = rgba.shape[1] / max(1, (row.get("size") or [rgba.shape[1]])[0])
        entries.append(entry_from_row(row, rgba, scale))
    if (out / REVIEW_DIR).is_dir():
        for p in (out / REVIEW_DIR).iterdir():
            if p.is_file() and p.name not in current:
                p.unlink(missing_ok=True)
    return render_review(entries, out / REVIEW)


def _report_flagged(run: StageRun, reporter: Reporter, out: Path, review: bool) -> None:
    """One line about enclosed regions kept without evidence (each is in its row's `holes`)."""
    images = [r for r in run.rows.values() if any(h.get("flagged") for h in r.get("holes") or [])]
    if not images:
        return
    count = sum(1 for r in images for h in r["holes"] if h.get("flagged"))
    where = f"see {out / REVIEW}" if review else "see the manifest's holes"
    reporter.warn(
        f"{count} enclosed region(s) of backdrop colour in {len(images)} cut-out(s) were kept: a see-through gap or white "
        f"paint? {where}; list gaps under cut in a holes file (--holes-file)"
    )
