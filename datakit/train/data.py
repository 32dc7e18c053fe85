"""Training datasets as kohya reads them: emit output, a kohya dataset TOML, or a folder-mode parent.

- TOML: [general] < [[datasets]] < [[datasets.subsets]], checked against kohya's schema
  (datakit.kohya_schema): an unknown key, a typo or a key at the wrong level is a usage error naming
  the key and the file, as kohya refuses the file. Every valid key is used, or refused by name where
  datakit cannot do what kohya would (random_crop/color_aug need the VAE every step, which kohya also
  refuses with cached latents; face_crop_aug_range; validation splits; network_multiplier).
- Folder mode: `<repeats>_<class tokens>/` under a parent folder.
- An image's caption is its same-stem caption file (the first line; with enable_wildcard every
  non-empty line), else the subset's class tokens.
"""

from __future__ import annotations

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the `tomli` package
    import tomli as tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from datakit.errors import ImageError, UsageError
from datakit.imageio import is_image_name
from datakit.train.caption_aug import CaptionSettings

# Dataset-level settings datakit reads (the first [[datasets]]' values are used for all).
DATASET_KEYS = ("resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                "bucket_reso_steps", "bucket_no_upscale")
CAPTION_KEYS = tuple(CaptionSettings.__dataclass_fields__)


@dataclass
class Subset:
    """One image folder with its repeats and caption settings (kohya's DreamBooth-style subset)."""

    image_dir: Path
    num_repeats: int = 1
    class_tokens: str | None = None
    is_reg: bool = False
    caption_extension: str | None = None  # None: ".caption" if any exist, else ".txt" (with a note)
    flip_aug: bool = False
    alpha_mask: bool = False
    resize_interpolation: str | None = None  # None: area when shrinking, Lanczos when enlarging
    captions: CaptionSettings = field(default_factory=CaptionSettings)


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


def _refusals(values: dict) -> list[str]:
    """Valid kohya options datakit cannot honour: each named, with why."""
    out = []
    for key in ("random_crop", "color_aug"):
        if values.get(key):
            out.append(f"{key} = true needs the VAE on every step, and datakit always caches latents "
                       f"(kohya refuses {key} with --cache_latents too); remove it")
    if values.get("face_crop_aug_range") is not None:
        out.append("face_crop_aug_range needs kohya's face positions in the file names; datakit does not support it")
    if values.get("validation_split", 0.0):
        out.append("validation_split: datakit trains on every image and has no validation loss; remove it")
    if values.get("network_multiplier", 1.0) != 1.0:
        out.append("network_multiplier other than 1.0 is not supported by datakit (one dataset, one strength)")
    interp = values.get("resize_interpolation")
    if interp is not None:
        from datakit.train.buckets import INTERPOLATIONS

        if interp not in INTERPOLATIONS:
            out.append(f"resize_interpolation {interp!r} is not one of {', '.join(INTERPOLATIONS)}")
    if values.get("caption_separator") == "":
        out.append("caption_separator must not be empty")
    return out


def _subset_from(values: dict, base: Path, where: str) -> Subset:
    image_dir = _resolve_dir(str(values["image_dir"]), base)
    if not image_dir.is_dir():
        raise UsageError(f"{where}: image_dir not found: {image_dir}")
    caption_kwargs = {k: values[k] for k in CAPTION_KEYS if k in values}
    for key in ("caption_dropout_rate", "caption_tag_dropout_rate", "token_warmup_step"):
        if key in caption_kwargs:
            caption_kwargs[key] = float(caption_kwargs[key])
    sub = Subset(image_dir=image_dir, num_repeats=int(values.get("num_repeats", 1)),
                 class_tokens=values.get("class_tokens"), is_reg=bool(values.get("is_reg", False)),
                 caption_extension=values.get("caption_extension"), flip_aug=bool(values.get("flip_aug", False)),
                 alpha_mask=bool(values.get("alpha_mask", False)), resize_interpolation=values.get("resize_interpolation"),
                 captions=CaptionSettings(**caption_kwargs))
    if sub.num_repeats < 1:
        raise UsageError(f"{where}: num_repeats must be at least 1")
    return sub


def read_toml_dataset(path: Path, notes: list[str]) -> DatasetSpec:
    """A kohya dataset TOML ([general], [[datasets]], [[datasets.subsets]]), checked as kohya checks it."""
    from datakit.kohya_schema import check

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a valid dataset TOML ({exc})") from None
    problems = check(data)
    if problems:
        raise UsageError(f"{path}: " + "; ".join(str(p) for p in problems))
    general = data.get("general", {})
    subsets: list[Subset] = []
    first: dict | None = None
    refused: list[str] = []
    for i, ds in enumerate(data["datasets"]):
        level = {**general, **{k: v for k, v in ds.items() if k != "subsets"}}
        dset = {k: level[k] for k in DATASET_KEYS if k in level}
        if first is None:
            first = dset
        elif dset != first:
            notes.append(f"{path.name}: dataset {i + 1} has other resolution/batch settings; the first dataset's are used")
        for j, sub in enumerate(ds["subsets"]):
            values = {**level, **sub}
            where = f"datasets[{i}].subsets[{j}]"
            refused += [f"{where}: {r}" for r in _refusals(values)]
            if values.get("custom_attributes"):
                notes.append(f"{path.name} {where}: custom_attributes are for kohya's custom scripts; datakit ignores them")
            if not refused:
                subsets.append(_subset_from(values, path.parent, f"{path.name} {where}"))
    if refused:
        raise UsageError(f"{path}: " + "; ".join(refused))
    spec = DatasetSpec(source=path, kind="toml", subsets=subsets, notes=notes)
    first = first or {}
    if "resolution" in first:
        from datakit.train.config import parse_resolution

        spec.resolution = parse_resolution(first["resolution"])
    for key in DATASET_KEYS[1:]:
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
        subsets.append(Subset(image_dir=child, num_repeats=int(m[1]), class_tokens=m[2].replace("_", " ")))
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
    if carry.get("trigger"):
        from datakit.captions import check_trigger

        spec.trigger = check_trigger(str(carry["trigger"]), source=f"{path} (datakit.json carry)")
    if carry.get("keep_tokens") is not None:
        spec.carry_keep_tokens = int(carry["keep_tokens"])
    plan = (info or {}).get("plan") or {}
    if isinstance(plan.get("epochs"), int) and plan["epochs"] > 0:
        spec.plan_epochs = plan["epochs"]
    return spec


def dataset_folders(spec: DatasetSpec) -> list[Path]:
    """Every folder the dataset reads from: the TOML's folder (or the parent) and each image_dir."""
    root = spec.source.parent if spec.source.is_file() else spec.source
    return [root, *(s.image_dir for s in spec.subsets)]


# ---- images and captions ---------------------------------------------------------------------

def _caption_extension(sub: Subset, images: list[Path], notes: list[str]) -> str:
    if sub.caption_extension:
        return sub.caption_extension if sub.caption_extension.startswith(".") else "." + sub.caption_extension
    has = {ext: any(p.with_suffix(ext).is_file() for p in images) for ext in (".caption", ".txt")}
    if has[".caption"] or not has[".txt"]:
        return ".caption"  # kohya's default
    notes.append(f"{sub.image_dir.name}: no caption_extension set and no .caption files; using the .txt captions")
    return ".txt"


def read_caption(path: Path, *, all_lines: bool = False) -> str:
    """kohya's reading: the first line, stripped; with all_lines (enable_wildcard) every non-empty line."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if all_lines:
        return "\n".join(line.strip() for line in lines if line.strip())
    return lines[0].strip() if lines else ""


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
                caption = read_caption(cap_path, all_lines=sub.captions.enable_wildcard)
            else:
                caption = sub.class_tokens or ""
                missing += 1
            entries.append(Entry(path=p, caption=caption, subset=si, size=size))
        if missing:
            spec.notes.append(f"{sub.image_dir.name}: {missing} image(s) without a {ext} caption use "
                              f"{'the class tokens' if sub.class_tokens else 'an empty caption'}")
    return entries, skipped


def captions_are_fixed(subsets: list[Subset]) -> bool:
    """True when no caption changes between uses, so text-encoder outputs can be cached."""
    return all(s.captions.is_fixed for s in subsets)


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


# ---- command-line overrides -------------------------------------------------------------------

SUBSET_OVERRIDES = ("flip_aug", "alpha_mask")
CAPTION_OVERRIDES = ("keep_tokens", "shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate")


def with_overrides(spec: DatasetSpec, overrides) -> tuple[DatasetSpec, list[str]]:
    """Apply command-line dataset overrides (None: keep the dataset's); returns the new spec and what changed."""
    changed = []
    spec = replace(spec, subsets=[replace(s) for s in spec.subsets])
    for key in ("resolution", "batch_size", "enable_bucket"):
        value = getattr(overrides, key)
        if value is not None and value != getattr(spec, key):
            changed.append(f"{key}: {getattr(spec, key)} (dataset) -> {value} (option)")
            setattr(spec, key, value)
    if overrides.keep_tokens is None and spec.carry_keep_tokens is not None:
        # emit carries the number of fixed leading tags (trigger first); honour it when the TOML has none.
        for s in spec.subsets:
            if not s.captions.keep_tokens:
                s.captions = replace(s.captions, keep_tokens=spec.carry_keep_tokens)
    for key in SUBSET_OVERRIDES + CAPTION_OVERRIDES:
        value = getattr(overrides, key)
        if value is None:
            continue
        on_captions = key in CAPTION_OVERRIDES
        olds = {getattr(s.captions if on_captions else s, key) for s in spec.subsets}
        if olds != {value}:
            changed.append(f"{key}: {', '.join(map(str, sorted(olds, key=str)))} (dataset) -> {value} (option)")
        for s in spec.subsets:
            if on_captions:
                s.captions = replace(s.captions, **{key: value})
            else:
                setattr(s, key, value)
    return spec, changed
