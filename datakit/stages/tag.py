"""`datakit tag`: WD14 captions for a folder of images, batched and pipelined, thresholds re-derivable.

Flow: plan (reuse unchanged items) -> probabilities, from OUT/tags.parquet when the same model already
saw the same image bytes, else from one onnxruntime session fed by a thread pool that decodes and
preprocesses the next images while the model runs -> tags chosen per item -> merged with the given
caption (append|keep|replace) -> image hard-linked + `.txt` written -> manifest, tags.parquet,
tag_frequency.csv, datakit.json last.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from datakit.captions import canonical, dedupe, format_tag, parse_caption
from datakit.console import Reporter
from datakit.errors import ImageError, UsageError
from datakit.imageio import atomic_path, link_or_copy, open_image, write_text_atomic
from datakit.inputs import InputItem, discover
from datakit.models.onnx_providers import cuda_driver_present
from datakit.manifest import hash_file
from datakit.models import taggers
from datakit.stage import StageRun, Task, TaskResult, default_workers

PROBS_FILE = "tags.parquet"
# Batches always run at one shape (padded), so the shape must stay affordable: 256 x 448 px float32
# is 0.6 GB of input.
MAX_BATCH = 256
FREQ_FILE = "tag_frequency.csv"
EXISTING_MODES = ("append", "keep", "replace")
# Upstream manifest fields that describe bookkeeping, not the item: not copied into our rows.
_BOOKKEEPING = {"file", "key", "status", "fingerprint", "outputs", "seed", "warnings", "reason", "source"}


@dataclass
class TagConfig:
    """Options of `datakit tag` (see docs/tag.md)."""

    input_dir: Path
    out_dir: Path
    model: str | None = None  # folder, model.onnx path, HF repo id, or "none"; None: $DATAKIT_TAGGER, else none
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    mcut: bool = False
    batch_size: int | None = None  # None: 32 on a GPU, 4 on CPU
    device: str = "auto"
    existing: str = "append"
    undesired: list[str] = field(default_factory=list)
    rating: bool = True
    underscores: bool = False
    rethreshold: bool = False
    top: int = 20
    workers: int | None = None
    force: bool = False


@dataclass
class _Model:
    """The tagger as the stage sees it: its files, labels and identity (the session opens lazily)."""

    files: taggers.TaggerFiles | None
    labels: taggers.Labels
    model_hash: str
    labels_hash: str


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def merge_caption(given: list[str], model_tags: list[str], mode: str) -> list[str]:
    """The final tags: the user's first (append), the user's only (keep), or the model's only (replace)."""
    if mode == "replace":
        return dedupe(model_tags)
    if mode == "keep" and given:
        return dedupe(given)
    return dedupe(given + model_tags)  # append: only tags not already given (any spelling) are added


def _tag_item(task: Task, probs: np.ndarray | None, model: _Model | None, cfg: TagConfig, undesired: frozenset) -> TaskResult:
    """Choose tags, merge with the given caption, hard-link the image and write its caption."""
    item: InputItem = task.payload
    warnings: list[str] = []
    if probs is None and model is None:
        # No model ran: still never pass on a file that is not a usable image.
        warnings += open_image(item.path).notes
    old_caption = item.caption_text()
    given = parse_caption(old_caption) if old_caption else []
    row: dict = {"old_caption": old_caption, "existing": cfg.existing}
    model_tags: list[str] = []
    if model is not None and probs is not None:
        sel = taggers.select_tags(
            probs, model.labels, general_threshold=cfg.general_threshold, character_threshold=cfg.character_threshold,
            mcut=cfg.mcut, rating=cfg.rating, undesired=undesired,
        )
        model_tags = sel.tags()
        row["scores"] = {format_tag(n, underscores=cfg.underscores): round(p, 4) for n, p in sel.scores().items()}
        row["rating"] = sel.rating[0] if sel.rating else None
    tags = [format_tag(t, underscores=cfg.underscores) for t in merge_caption(given, model_tags, cfg.existing)]
    image_name = task.params["image"]
    caption_name = task.params["caption"]
    link_or_copy(item.path, cfg.out_dir / image_name)
    write_text_atomic(cfg.out_dir / caption_name, ", ".join(tags) + "\n")
    row["tags"] = tags
    row["model_tags"] = [format_tag(t, underscores=cfg.underscores) for t in model_tags]
    upstream = {k: v for k, v in item.row.items() if k not in _BOOKKEEPING}
    if upstream:
        row["upstream"] = upstream
    if not tags:
        warnings.append("empty caption: no caption was given and no tag was chosen")
    return TaskResult(key=task.key, outputs=[image_name, caption_name], row=row, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# Stored probabilities (OUT/tags.parquet)
# ---------------------------------------------------------------------------------------------


def _read_store(out: Path) -> tuple[dict, dict[str, tuple[str, np.ndarray]]]:
    """(metadata, {key: (image hash, probabilities)}) from OUT/tags.parquet; empty when absent or unreadable."""
    path = out / PROBS_FILE
    if not path.is_file():
        return {}, {}
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"datakit", b"{}"))
        keys = table.column("key").to_pylist()
        hashes = table.column("image_hash").to_pylist()
        flat = table.column("probs").combine_chunks().flatten().to_numpy().astype(np.float32)
    except Exception:
        return {}, {}  # a damaged store only costs a re-run of the model
    width = len(meta.get("names", [])) or (len(flat) // max(1, len(keys)))
    rows = {k: (h, flat[i * width : (i + 1) * width]) for i, (k, h) in enumerate(zip(keys, hashes))}
    return meta, rows


def _write_store(out: Path, meta: dict, rows: dict[str, tuple[str, np.ndarray]], files: dict[str, str]) -> None:
    """Write OUT/tags.parquet atomically: one row per item (key, file, image hash, probabilities)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(rows)
    width = len(meta["names"])
    flat = np.concatenate([rows[k][1] for k in keys]).astype(np.float32) if keys else np.zeros(0, np.float32)
    probs = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)
    table = pa.table(
        {"key": keys, "file": [files.get(k) for k in keys], "image_hash": [rows[k][0] for k in keys], "probs": probs}
    ).replace_schema_metadata({"datakit": json.dumps(meta)})
    with atomic_path(out / PROBS_FILE) as tmp:
        pq.write_table(table, tmp)


def read_probabilities(out_dir: str | os.PathLike):
    """OUT/tags.parquet as a pandas DataFrame: one row per image file, one column per tag (for analysis)."""
    import pandas as pd

    meta, rows = _read_store(Path(out_dir))
    if not rows:
        raise UsageError(f"no readable {PROBS_FILE} in {out_dir}")
    import pyarrow.parquet as pq

    files = pq.read_table(Path(out_dir) / PROBS_FILE, columns=["key", "file"]).to_pydict()
    index = [f or k for k, f in zip(files["key"], files["file"])]
    return pd.DataFrame(np.stack([p for _, p in rows.values()]), index=index, columns=meta["names"])


# ---------------------------------------------------------------------------------------------
# The model side
# ---------------------------------------------------------------------------------------------


def _load_model(cfg: TagConfig, name: str, reporter: Reporter) -> _Model | None:
    """Resolve the tagger (or the stored one for --rethreshold); None for --model none."""
    if cfg.rethreshold:
        meta, rows = _read_store(cfg.out_dir)
        if not rows:
            raise UsageError(f"--rethreshold needs {cfg.out_dir / PROBS_FILE} from an earlier run with a model")
        if cfg.model or os.environ.get(taggers.ENV_MODEL):
            files = taggers.resolve_tagger(name)
            if hash_file(files.model) != meta.get("model_hash"):
                raise UsageError(f"--rethreshold: {name} is not the model that wrote {PROBS_FILE} ({meta.get('model')})")
        labels = taggers.Labels(meta["names"], np.array(meta["categories"]))
        reporter.info(f"tag: re-deriving captions from {PROBS_FILE} (model {meta.get('model')}); no model runs")
        return _Model(None, labels, meta["model_hash"], meta["labels_hash"])
    if name == taggers.NO_MODEL:
        reporter.info(
            f"tag: no tagger model named (--model or ${taggers.ENV_MODEL}): no image model ran; "
            "the given captions are kept and normalised"
        )
        return None
    files = taggers.resolve_tagger(name)
    labels = taggers.read_labels(files.labels)
    return _Model(files, labels, _model_hash(files.model, cfg.out_dir), hash_file(files.labels))


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _model_hash(path: Path, out: Path) -> str:
    """The model file's content hash; taken from OUT/tags.parquet when the file is unchanged since.

    WD14 models are 0.3-1.3 GB: hashing one costs a second or two on every run otherwise.
    """
    store = out / PROBS_FILE
    if store.is_file():
        import pyarrow.parquet as pq

        try:
            meta = json.loads((pq.read_schema(store).metadata or {}).get(b"datakit", b"{}"))
            if meta.get("model_hash") and meta.get("model_stamp") == _file_stamp(path):
                return meta["model_hash"]
        except Exception:
            pass  # unreadable store: hash the file
    return hash_file(path)


def _prepare(task: Task, size: int) -> tuple[np.ndarray | None, list[str], TaskResult | None]:
    """Decode + preprocess one image in a pool thread: (array, loader notes, None) or a skipped/failed result."""
    try:
        arr, notes = taggers.load_for_tagger(task.payload.path, size)
        return arr, notes, None
    except ImageError as exc:
        return None, [], TaskResult(key=task.key, status="skipped", reason=str(exc))
    except Exception as exc:  # one odd file must not stop the run
        return None, [], TaskResult(key=task.key, status="failed", reason=f"{type(exc).__name__}: {exc}")


def infer(
    tasks: list[Task], session: taggers.TaggerSession, batch_size: int, workers: int
) -> Iterator[tuple[Task, np.ndarray | None, list[str], TaskResult | None]]:
    """Yield (task, probabilities, loader notes, failure): decoding runs ahead in threads while the model runs.

    Every batch runs at one shape, `batch_size` (the last one padded by TaggerSession.run), whatever
    the number of tasks: an image tagged alone gets the same probabilities as in a full batch.
    """
    batch_size = max(1, batch_size)
    session.batch = batch_size
    lookahead = batch_size * 2 + workers  # enough decoded images to fill the next batch while this one runs
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datakit-tag")
    try:
        queue: list[tuple[Task, Future]] = []
        it = iter(tasks)

        def refill() -> None:
            for task in it:
                queue.append((task, pool.submit(_prepare, task, session.size)))
                if len(queue) >= lookahead:
                    break

        refill()
        # One float32 batch buffer for the run: each uint8 image is converted as it is copied in.
        buffer = np.empty((batch_size, session.size, session.size, 3), dtype=np.float32)
        while queue:
            batch_tasks: list[tuple[Task, list[str]]] = []
            while queue and len(batch_tasks) < batch_size:
                task, fut = queue.pop(0)
                arr, notes, failure = fut.result()
                refill()
                if failure is not None:
                    yield task, None, [], failure
                    continue
                buffer[len(batch_tasks)] = arr
                batch_tasks.append((task, notes))
            if batch_tasks:
                n = len(batch_tasks)
                buffer[n:] = 255.0  # the last batch: white images fill the fixed shape
                probs = session.run(buffer)[:n]
                for (task, notes), p in zip(batch_tasks, probs):
                    yield task, p, notes, None
    finally:
        # Interrupted (Ctrl-C) or done: drop the decoding not started yet instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def _frequency(rows: list[dict]) -> list[tuple[str, int, float]]:
    """Tag frequency over the final captions: (tag, images, share of images), most frequent first."""
    captioned = [r for r in rows if r.get("status") == "ok"]
    counts = Counter(t for r in captioned for t in r.get("tags", []))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(t, n, round(n / len(captioned), 4)) for t, n in ranked]


def _write_frequency(out: Path, table: list[tuple[str, int, float]]) -> None:
    """OUT/tag_frequency.csv (tag,count,share): opens in pandas or a spreadsheet."""
    with atomic_path(out / FREQ_FILE) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag", "count", "share"])
        writer.writerows(table)


def _print_frequency(table: list[tuple[str, int, float]], top: int, reporter: Reporter) -> None:
    if not table or top <= 0:
        return
    lines = [f"  {count:>5}  {share:>6.1%}  {tag}" for tag, count, share in table[:top]]
    more = f" (top {top} of {len(table)})" if len(table) > top else ""
    reporter.info(f"tag frequency{more}, saved to {FREQ_FILE}:\n" + "\n".join(lines))


def run_tag(cfg: TagConfig, reporter: Reporter) -> dict:
    """Tag (or re-caption) every input item into cfg.out_dir; returns the datakit.json info."""
    if cfg.existing not in EXISTING_MODES:
        raise UsageError(f"--existing must be one of {', '.join(EXISTING_MODES)}, not {cfg.existing!r}")
    if not 0.0 <= cfg.general_threshold <= 1.0:
        raise UsageError(f"--general-threshold must be between 0 and 1, not {cfg.general_threshold}")
    if cfg.character_threshold < 0.0:
        raise UsageError(f"--character-threshold must be 0 or more (above 1 disables character tags), not {cfg.character_threshold}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    cfg.input_dir, cfg.out_dir = Path(cfg.input_dir), Path(cfg.out_dir)
    inputs = discover(cfg.input_dir, stage="tag")
    name = taggers.requested_model(cfg.model)
    model = _load_model(cfg, name, reporter)
    undesired = frozenset(canonical(t) for t in cfg.undesired if t.strip())

    config = {
        "model": model.model_hash if model else taggers.NO_MODEL,
        "labels": model.labels_hash if model else None,
        "preprocess": taggers.PREPROCESS_ID,
        "general_threshold": cfg.general_threshold,
        "character_threshold": cfg.character_threshold,
        "mcut": cfg.mcut,
        "existing": cfg.existing,
        "undesired": sorted(undesired),
        "rating": cfg.rating,
        "underscores": cfg.underscores,
    }
    tasks = []
    for item in inputs.items:
        image, caption = f"{item.stem}{item.path.suffix}", f"{item.stem}.txt"
        deps = [item.path] + ([item.caption] if item.caption else [])
        tasks.append(Task(key=item.key, inputs=deps, params={"image": image, "caption": caption}, payload=item, source=item.key))
    run = StageRun("tag", cfg.out_dir, config, inputs_dir=cfg.input_dir, upstream=inputs.upstream, force=cfg.force,
                   reporter=reporter, pre_skipped=inputs.skipped)
    todo = run.begin(tasks)
    if todo is None:
        return run.summary_from_previous()

    # Probabilities already computed by the same model for the same image bytes are reused (also how
    # --rethreshold works); only the rest go through the model.
    meta, stored = _read_store(cfg.out_dir) if model else ({}, {})
    same_model = meta.get("model_hash") == (model.model_hash if model else None) and meta.get("preprocess") == taggers.PREPROCESS_ID
    stored = stored if same_model else {}
    probs_of: dict[str, tuple[str, np.ndarray]] = {}
    need_model: list[Task] = []
    todo_keys = {t.key for t in todo}
    if model:
        for task in tasks:
            if task.key not in todo_keys:  # reused item: keep its stored probabilities as they are
                if task.key in stored:
                    probs_of[task.key] = stored[task.key]
                continue
            h = hash_file(task.payload.path)
            if task.key in stored and stored[task.key][0] == h:
                probs_of[task.key] = stored[task.key]
            else:
                probs_of[task.key] = (h, None)
                need_model.append(task)
    if cfg.rethreshold and need_model:
        names = ", ".join(t.key for t in need_model[:5])
        raise UsageError(
            f"--rethreshold: {len(need_model)} item(s) have no stored probabilities (new or changed images: {names}); "
            "run without --rethreshold and with the model"
        )

    session = None
    extra: dict = {"model_name": (model.files.name if model.files else meta.get("model")) if model else None,
                   "device_requested": cfg.device}
    if need_model:  # one session for the whole run, opened before anything in OUT changes
        session = taggers.open_session(model.files, model.labels, device=cfg.device)
        batch = session.fixed_batch or min(cfg.batch_size or (32 if session.on_gpu else 4), MAX_BATCH)
        if cfg.batch_size and not session.fixed_batch and cfg.batch_size > MAX_BATCH:
            # The batch is one fixed shape (padded), so `-b 4096` on 10 images would mean 9 GiB of input.
            reporter.warn(f"--batch-size {cfg.batch_size} is above {MAX_BATCH}, the largest batch the tagger runs: using {MAX_BATCH}")
        _report_session(session, cfg, batch, reporter)
        extra.update({"provider": session.provider, "batch_size": batch, "input_size": session.size})

    def save_store() -> None:
        """OUT/tags.parquet: the probabilities of every item whose caption is in the manifest."""
        if not model:
            return
        keep = {k: v for k, v in probs_of.items() if v[1] is not None and run.rows.get(k, {}).get("status") == "ok"}
        store_meta = {
            "model": extra["model_name"],
            "model_hash": model.model_hash,
            "model_stamp": _file_stamp(model.files.model) if model.files else meta.get("model_stamp"),
            "labels_hash": model.labels_hash,
            "preprocess": taggers.PREPROCESS_ID,
            "names": model.labels.names,
            "categories": model.labels.categories.tolist(),
        }
        _write_store(cfg.out_dir, store_meta, keep, {k: run.rows[k].get("file") for k in keep})

    run.invalidate()  # only now: an error above leaves the previous result intact
    workers = cfg.workers or default_workers()
    try:
        with reporter.progress(len(todo), "tag") as bar:
            done: set[str] = set()
            if session is not None:
                for task, probs, notes, failure in infer(need_model, session, batch, workers):
                    if failure is not None:
                        run.record(task, failure)
                    else:
                        probs_of[task.key] = (probs_of[task.key][0], probs)
                        result = _safe(task, probs, model, cfg, undesired)
                        result.warnings[:0] = notes  # what the loader did (EXIF, ICC, 16-bit), first
                        run.record(task, result)
                    done.add(task.key)
                    bar.advance(1)
            for task in todo:
                if task.key in done:
                    continue
                probs = probs_of.get(task.key, (None, None))[1]
                run.record(task, _safe(task, probs, model, cfg, undesired))
                bar.advance(1)
    except KeyboardInterrupt:
        # Keep what is done (captions, their manifest rows and probabilities): a re-run continues.
        save_store()
        run.save_progress()
        raise

    save_store()
    rows = [run.rows[t.key] for t in tasks if t.key in run.rows]
    freq = _frequency(rows)
    _write_frequency(cfg.out_dir, freq)
    _print_frequency(freq, cfg.top, reporter)
    extra["tagger"] = "wd14" if model else None
    return run.finish(extra=extra)


def _safe(task: Task, probs, model, cfg: TagConfig, undesired) -> TaskResult:
    """_tag_item with the stage contract's error handling (bad input skipped, anything else failed)."""
    t0 = time.perf_counter()
    try:
        result = _tag_item(task, probs, model, cfg, undesired)
    except ImageError as exc:
        result = TaskResult(key=task.key, status="skipped", reason=str(exc))
    except Exception as exc:  # one item's failure (disk, odd caption) must not stop the others
        result = TaskResult(key=task.key, status="failed", reason=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - t0
    return result


_CUDA_HINT = (
    "its CUDA provider did not load (onnxruntime-gpu needs the CUDA and cuDNN versions it was built for: "
    "https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements)"
)


def _report_session(session: taggers.TaggerSession, cfg: TagConfig, batch: int, reporter: Reporter) -> None:
    """Say where the model runs; a GPU that was asked for but not used is a warning."""
    reporter.info(f"tag: WD14 tagger on {session.provider} (input {session.size}px, batch {batch})")
    if session.fixed_batch:
        ignored = f"; --batch-size {cfg.batch_size} ignored" if cfg.batch_size and cfg.batch_size != batch else ""
        reporter.info(f"tag: note: the model's batch dimension is fixed at {session.fixed_batch}, so batches of {batch}{ignored}")
    if cfg.device == "cuda" and not session.on_gpu:
        reporter.warn(f"--device cuda requested but onnxruntime fell back to CPU: {_CUDA_HINT}")
    elif cfg.device == "auto" and not session.on_gpu and cuda_driver_present():
        reporter.warn(f"an NVIDIA driver is present but onnxruntime runs the tagger on CPU: {_CUDA_HINT}")
    elif cfg.device == "mps" and not session.on_gpu:
        reporter.warn("--device mps requested but onnxruntime has no CoreML provider here; running on CPU")
