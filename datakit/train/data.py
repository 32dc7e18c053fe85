"""Training data: kohya datasets (emit output, dataset TOML, folder mode), buckets, captions, batches.

Reading follows kohya sd-scripts so a dataset trains the same here and there:
- TOML: [general] < [[datasets]] < [[datasets.subsets]]; folder-name numbers are ignored.
- Folder mode: `<repeats>_<class tokens>/` under a parent folder.
- An image's caption is its same-stem caption file, else the subset's class tokens.
- Aspect-ratio buckets as kohya makes them (area of resolution^2, steps of bucket_reso_steps);
  each image is resized to cover its bucket (INTER_AREA) and centre-cropped.
- keep_tokens counts comma-separated chunks; shuffle and tag dropout apply to the rest.
"""

from __future__ import annotations

import math
import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the `tomli` package
    import tomli as tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from datakit.errors import ImageError, UsageError
from datakit.imageio import is_image_name

SUBSET_KEYS = {
    "num_repeats", "class_tokens", "is_reg", "caption_extension", "keep_tokens", "shuffle_caption",
    "caption_dropout_rate", "caption_tag_dropout_rate", "caption_prefix", "caption_suffix", "flip_aug",
    "alpha_mask", "keep_tokens_separator", "caption_dropout_every_n_epochs", "color_aug", "random_crop",
    "image_dir", "name",
}
DATASET_KEYS = {"resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                "bucket_reso_steps", "bucket_no_upscale"}


@dataclass
class Subset:
    """One image folder with its repeats and caption settings (kohya's subset)."""

    image_dir: Path
    num_repeats: int = 1
    class_tokens: str | None = None
    is_reg: bool = False
    caption_extension: str | None = None  # None: ".caption" if any exist, else ".txt" (with a note)
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    shuffle_caption: bool = False
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    caption_prefix: str = ""
    caption_suffix: str = ""
    flip_aug: bool = False
    alpha_mask: bool = False
    name: str = ""


@dataclass
class Entry:
    """One image of the dataset."""

    path: Path
    caption: str
    subset: int
    size: tuple[int, int]
    bucket: tuple[int, int] = (0, 0)


@dataclass
class DatasetSpec:
    """A parsed dataset: subsets and dataset-level settings, plus where they came from."""

    source: Path
    kind: str  # emit | toml | folder
    subsets: list[Subset]
    resolution: tuple[int, int] = (512, 512)
    batch_size: int = 1
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    trigger: str | None = None
    carry_keep_tokens: int | None = None
    plan_epochs: int | None = None  # emit's plan: the epoch count it chose for the concepts' balance
    notes: list[str] = field(default_factory=list)


def _resolve_dir(value: str, base: Path) -> Path:
    """kohya resolves image_dir from the working directory; emit writes paths relative to the TOML."""
    p = Path(value).expanduser()
    if p.is_absolute():
        if p.is_dir():
            return p
        # emit writes absolute paths (kohya needs them); a dataset copied to another machine keeps
        # its layout, so look for img/<N_name> (or reg/<N_name>) beside the TOML before giving up.
        moved = base / p.parent.name / p.name
        return moved if moved.is_dir() else p
    beside = (base / p)
    return beside if beside.is_dir() or not p.is_dir() else p


def _subset_from(values: dict, base: Path, where: str) -> Subset:
    if "image_dir" not in values:
        raise UsageError(f"{where}: a subset has no image_dir")
    image_dir = _resolve_dir(str(values["image_dir"]), base)
    if not image_dir.is_dir():
        raise UsageError(f"{where}: image_dir not found: {image_dir}")
    kwargs = {k: values[k] for k in SUBSET_KEYS & set(values) if k in Subset.__dataclass_fields__ and k != "image_dir"}
    sub = Subset(image_dir=image_dir, **kwargs)
    sub.num_repeats = int(sub.num_repeats)
    if sub.num_repeats < 1:
        raise UsageError(f"{where}: num_repeats must be at least 1")
    return sub


def read_toml_dataset(path: Path, notes: list[str]) -> DatasetSpec:
    """A kohya dataset TOML ([general], [[datasets]], [[datasets.subsets]])."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a valid dataset TOML ({exc})") from None
    general = data.get("general", {})
    datasets = data.get("datasets", [])
    if not datasets:
        raise UsageError(f"{path}: no [[datasets]] table")
    subsets: list[Subset] = []
    first: dict | None = None
    for i, ds in enumerate(datasets):
        level = {**general, **{k: v for k, v in ds.items() if k != "subsets"}}
        dset = {k: level[k] for k in DATASET_KEYS if k in level}
        if first is None:
            first = dset
        elif dset != first:
            notes.append(f"{path.name}: dataset {i + 1} has other resolution/batch settings; the first dataset's are used")
        for j, sub in enumerate(ds.get("subsets", [])):
            subsets.append(_subset_from({**level, **sub}, path.parent, f"{path.name} dataset {i + 1} subset {j + 1}"))
    if not subsets:
        raise UsageError(f"{path}: no [[datasets.subsets]] entries")
    spec = DatasetSpec(source=path, kind="toml", subsets=subsets, notes=notes)
    first = first or {}
    if "resolution" in first:
        from datakit.train.config import parse_resolution

        spec.resolution = parse_resolution(first["resolution"])
    for key in ("batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale"):
        if key in first:
            setattr(spec, key, type(getattr(spec, key))(first[key]))
    return spec


FOLDER_RE = re.compile(r"^(\d+)_(.+)$")


def read_folder_dataset(parent: Path, notes: list[str]) -> DatasetSpec:
    """kohya folder mode: `<repeats>_<class tokens>/` subfolders."""
    subsets = []
    for child in sorted(p for p in parent.iterdir() if p.is_dir()):
        m = FOLDER_RE.match(child.name)
        if not m:
            if any(is_image_name(f) for f in child.iterdir()):
                notes.append(f"{child.name}/ ignored: folder-mode folders are named <repeats>_<name>")
            continue
        subsets.append(Subset(image_dir=child, num_repeats=int(m[1]), class_tokens=m[2].replace("_", " "), name=m[2]))
    return DatasetSpec(source=parent, kind="folder", subsets=subsets, notes=notes)


def read_dataset(path: Path) -> DatasetSpec:
    """DATASET: emit's OUT (dataset.toml + datakit.json), a kohya TOML, or a folder-mode parent."""
    from datakit.manifest import carried_from, read_stage_info

    path = Path(path)
    notes: list[str] = []
    if path.is_file():
        spec = read_toml_dataset(path, notes)
        info = read_stage_info(path.parent)
    elif path.is_dir() and (path / "dataset.toml").is_file():
        spec = read_toml_dataset(path / "dataset.toml", notes)
        info = read_stage_info(path)
        if info is not None:
            spec.kind = "emit"
    elif path.is_dir():
        spec = read_folder_dataset(path, notes)
        info = read_stage_info(path)
        if not spec.subsets:
            raise UsageError(f"{path}: no dataset.toml and no <repeats>_<name>/ folders; is this a dataset?")
    else:
        raise UsageError(f"dataset not found: {path}")
    carry = carried_from(info)
    spec.trigger = carry.get("trigger") or None
    if carry.get("keep_tokens") is not None:
        spec.carry_keep_tokens = int(carry["keep_tokens"])
    plan = (info or {}).get("plan") or {}
    if isinstance(plan.get("epochs"), int) and plan["epochs"] > 0:
        spec.plan_epochs = plan["epochs"]
    return spec


# ---- images and captions ---------------------------------------------------------------------

def _caption_extension(sub: Subset, images: list[Path], notes: list[str]) -> str:
    if sub.caption_extension:
        return sub.caption_extension if sub.caption_extension.startswith(".") else "." + sub.caption_extension
    has = {ext: any(p.with_suffix(ext).is_file() for p in images) for ext in (".caption", ".txt")}
    if has[".caption"] or not has[".txt"]:
        return ".caption"  # kohya's default
    notes.append(f"{sub.image_dir.name}: no caption_extension set and no .caption files; using the .txt captions")
    return ".txt"


def read_caption(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def image_size(path: Path) -> tuple[int, int]:
    """Width, height (EXIF-upright), without decoding pixels; ImageError for unusable files."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise ImageError("zero-byte file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"not a readable image ({exc})") from exc
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def collect_entries(spec: DatasetSpec) -> tuple[list[Entry], list[dict]]:
    """Every image of every subset with its caption; unusable files come back as skipped rows."""
    entries: list[Entry] = []
    skipped: list[dict] = []
    for si, sub in enumerate(spec.subsets):
        images = sorted(p for p in sub.image_dir.iterdir() if p.is_file() and is_image_name(p))
        if not images:
            spec.notes.append(f"{sub.image_dir}: no images")
            continue
        ext = _caption_extension(sub, images, spec.notes)
        missing = 0
        for p in images:
            try:
                size = image_size(p)
            except ImageError as exc:
                skipped.append({"source": str(p), "reason": str(exc)})
                continue
            cap_path = p.with_suffix(ext)
            if cap_path.is_file():
                caption = read_caption(cap_path)
            else:
                caption = sub.class_tokens or ""
                missing += 1
            entries.append(Entry(path=p, caption=caption, subset=si, size=size))
        if missing:
            spec.notes.append(f"{sub.image_dir.name}: {missing} image(s) without a {ext} caption use "
                              f"{'the class tokens' if sub.class_tokens else 'an empty caption'}")
    return entries, skipped


def process_caption(caption: str, sub: Subset, rng: np.random.Generator) -> str:
    """kohya's caption augmentation: prefix/suffix, caption dropout, keep_tokens + shuffle + tag dropout."""
    if sub.caption_prefix:
        caption = f"{sub.caption_prefix}, {caption}" if caption else sub.caption_prefix
    if sub.caption_suffix:
        caption = f"{caption}, {sub.caption_suffix}" if caption else sub.caption_suffix
    if sub.caption_dropout_rate and rng.random() < sub.caption_dropout_rate:
        return ""
    if not (sub.shuffle_caption or sub.caption_tag_dropout_rate):
        return caption
    if sub.keep_tokens_separator and sub.keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(sub.keep_tokens_separator, 1)
        fixed = [t.strip() for t in fixed_part.split(",") if t.strip()]
        flex = [t.strip() for t in flex_part.split(",") if t.strip()]
    else:
        tokens = [t.strip() for t in caption.split(",") if t.strip()]
        fixed, flex = tokens[: sub.keep_tokens], tokens[sub.keep_tokens:]
    if sub.shuffle_caption:
        flex = [flex[i] for i in rng.permutation(len(flex))]
    if sub.caption_tag_dropout_rate:
        flex = [t for t in flex if rng.random() >= sub.caption_tag_dropout_rate]
    return ", ".join(fixed + flex)


def captions_are_fixed(subsets: list[Subset]) -> bool:
    """True when no caption changes between epochs, so text-encoder outputs can be cached."""
    return not any(s.shuffle_caption or s.caption_dropout_rate or s.caption_tag_dropout_rate for s in subsets)


def tag_frequency(spec: DatasetSpec, entries: list[Entry]) -> dict:
    """kohya's ss_tag_frequency: {"<repeats>_<name>": {tag: count}}."""
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        sub = spec.subsets[e.subset]
        counts = out.setdefault(sub.image_dir.name, {})
        for tag in (t.strip() for t in e.caption.split(",")):
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return out


def dataset_dirs(spec: DatasetSpec, entries: list[Entry]) -> dict:
    """kohya's ss_dataset_dirs: {"<dir name>": {"n_repeats": N, "img_count": M}}."""
    out = {}
    for si, sub in enumerate(spec.subsets):
        out[sub.image_dir.name] = {"n_repeats": sub.num_repeats, "img_count": sum(1 for e in entries if e.subset == si)}
    return out


# ---- buckets ---------------------------------------------------------------------------------

def make_buckets(resolution: tuple[int, int], min_size: int, max_size: int, steps: int) -> list[tuple[int, int]]:
    """kohya's bucket list: every (w, h) on the step grid with area <= resolution area, both orientations."""
    max_area = resolution[0] * resolution[1]
    resos = set()
    side = int(math.sqrt(max_area) // steps) * steps
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // steps) * steps)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += steps
    return sorted(resos)


def assign_buckets(entries: list[Entry], spec: DatasetSpec) -> dict[tuple[int, int], int]:
    """Give each entry its bucket; returns {bucket: image count}."""
    res = spec.resolution
    if not spec.enable_bucket:
        for e in entries:
            e.bucket = res
    else:
        steps = spec.bucket_reso_steps
        min_size = min(spec.min_bucket_reso, *res)
        max_size = max(spec.max_bucket_reso, *res)
        buckets = make_buckets(res, min_size, max_size, steps)
        ratios = np.array([w / h for w, h in buckets])
        max_area = res[0] * res[1]
        for e in entries:
            w, h = e.size
            if spec.bucket_no_upscale and w * h <= max_area:
                e.bucket = (max(steps, w - w % steps), max(steps, h - h % steps))
                continue
            e.bucket = buckets[int(np.argmin(np.abs(ratios - w / h)))]
    counts: dict[tuple[int, int], int] = {}
    for e in entries:
        counts[e.bucket] = counts.get(e.bucket, 0) + 1
    return counts


def load_for_bucket(path: Path, bucket: tuple[int, int], *, alpha_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB float image in [-1, 1] (H, W, 3) resized to cover the bucket and centre-cropped; alpha (H, W) when asked.

    Like kohya, RGB comes from convert("RGB"): transparent pixels show whatever colour lies under them.
    """
    import cv2

    from datakit.imageio import open_image

    loaded = open_image(path)
    rgba = np.asarray(loaded.image.convert("RGBA"))
    h, w = rgba.shape[:2]
    bw, bh = bucket
    scale = max(bw / w, bh / h)
    nw, nh = max(bw, round(w * scale)), max(bh, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    resized = cv2.resize(rgba, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else rgba
    top, left = (nh - bh) // 2, (nw - bw) // 2
    crop = resized[top:top + bh, left:left + bw]
    rgb = crop[..., :3].astype(np.float32) / 127.5 - 1.0
    mask = crop[..., 3].astype(np.float32) / 255.0 if alpha_mask else None
    return rgb, mask


# ---- epochs and batches ----------------------------------------------------------------------

@dataclass
class Sample:
    """One training example of one step: an entry, whether it is flipped."""

    entry: int
    flip: bool = False


def epoch_batches(entries: list[Entry], spec: DatasetSpec, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches of entry indices: repeats expanded, grouped by bucket, shuffled by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for i, e in enumerate(entries):
        by_bucket.setdefault(e.bucket, []).extend([i] * spec.subsets[e.subset].num_repeats)
    batches = []
    for bucket in sorted(by_bucket):
        items = by_bucket[bucket]
        items = [items[j] for j in rng.permutation(len(items))]
        batches.extend(items[k:k + batch_size] for k in range(0, len(items), batch_size))
    return [batches[j] for j in rng.permutation(len(batches))]


def batches_per_epoch(entries: list[Entry], spec: DatasetSpec, batch_size: int) -> int:
    by_bucket: dict[tuple[int, int], int] = {}
    for e in entries:
        by_bucket[e.bucket] = by_bucket.get(e.bucket, 0) + spec.subsets[e.subset].num_repeats
    return sum(math.ceil(n / batch_size) for n in by_bucket.values())


def with_overrides(spec: DatasetSpec, cfg) -> tuple[DatasetSpec, list[str]]:
    """Apply command-line overrides to dataset settings; returns the new spec and what changed."""
    changed = []
    spec = replace(spec, subsets=[replace(s) for s in spec.subsets])
    for key in ("resolution", "batch_size", "enable_bucket"):
        value = getattr(cfg, key)
        if value is not None and value != getattr(spec, key):
            changed.append(f"{key}: {getattr(spec, key)} (dataset) -> {value} (option)")
            setattr(spec, key, value)
    keep = cfg.keep_tokens
    if keep is None and spec.carry_keep_tokens is not None:
        # emit carries the number of fixed leading tags (trigger first); honour it when the TOML has none.
        for s in spec.subsets:
            if not s.keep_tokens:
                s.keep_tokens = spec.carry_keep_tokens
    for key in ("keep_tokens", "shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate", "flip_aug", "alpha_mask"):
        value = getattr(cfg, key)
        if value is None:
            continue
        olds = {getattr(s, key) for s in spec.subsets}
        if olds != {value}:
            changed.append(f"{key}: {', '.join(map(str, sorted(olds, key=str)))} (dataset) -> {value} (option)")
        for s in spec.subsets:
            setattr(s, key, value)
    return spec, changed
