"""WD14-format taggers (SmilingWolf `model.onnx` + `selected_tags.csv`): find, load, preprocess, select.

The preprocessing and tag selection follow kohya sd-scripts' `finetune/tag_images_by_wd14_tagger.py`
(commit 48d368f), because users trust the tags that tool gives: alpha flattened onto white,
RGB->BGR, padded to a white square, resized to the model's input size (cv2 INTER_AREA when
shrinking, PIL LANCZOS when enlarging), float32 0..255, NHWC. Heavy libraries (onnxruntime, cv2,
huggingface_hub) are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from datakit.errors import DependencyError, ModelNotFoundError
from datakit.models.onnx_providers import choose_providers

MODEL_FILE = "model.onnx"
LABELS_FILE = "selected_tags.csv"
ENV_MODEL = "DATAKIT_TAGGER"
NO_MODEL = "none"

# Categories of selected_tags.csv.
RATING, GENERAL, CHARACTER = 9, 0, 4

# Names the preprocessing in fingerprints: change it when the pixels fed to the model change.
PREPROCESS_ID = "kohya-sd-scripts-48d368f"


# ---------------------------------------------------------------------------------------------
# Finding the model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaggerFiles:
    """Where a WD14 tagger's two files are, and how the user named it."""

    name: str
    model: Path
    labels: Path


def requested_model(model: str | None) -> str:
    """The model named by --model, else by $DATAKIT_TAGGER, else 'none' (never a cache guess)."""
    value = (model or "").strip() or os.environ.get(ENV_MODEL, "").strip()
    return value or NO_MODEL


def _missing(name: str, detail: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"WD14 tagger '{name}' not found: {detail}. A tagger is a folder holding {MODEL_FILE} and "
        f"{LABELS_FILE} (e.g. from https://huggingface.co/SmilingWolf/wd-vit-tagger-v3): pass that "
        f"folder with --model PATH (or set {ENV_MODEL}), or a Hugging Face repo id already in the "
        "local cache (downloaded when online), or --model none to keep the given captions"
    )


def resolve_tagger(model: str) -> TaggerFiles:
    """A folder (or a model.onnx path) holding the two files, or a Hugging Face repo id via its cache."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        labels = path.with_name(LABELS_FILE)
        if not labels.is_file():
            raise _missing(model, f"{LABELS_FILE} is not beside {path}")
        return TaggerFiles(model, path, labels)
    if path.is_dir():
        missing = [f for f in (MODEL_FILE, LABELS_FILE) if not (path / f).is_file()]
        if missing:
            raise _missing(model, f"{' and '.join(missing)} missing in {path}")
        return TaggerFiles(model, path / MODEL_FILE, path / LABELS_FILE)
    # Anything that looks like `owner/name` (optionally `@revision`) and is not a local path: the HF cache.
    repo, _, revision = model.partition("@")
    if repo.count("/") == 1 and not path.exists() and not model.startswith((".", "/", "~")):
        return _from_hub(model, repo, revision or None)
    raise _missing(model, "no such folder or file")


def _from_hub(name: str, repo: str, revision: str | None) -> TaggerFiles:
    """Both files from the Hugging Face cache; downloaded only when the hub is reachable (not offline)."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with diffusers/transformers
        raise DependencyError("a Hugging Face repo id needs huggingface_hub: pip install huggingface_hub") from exc

    paths = []
    for filename in (MODEL_FILE, LABELS_FILE):
        try:
            paths.append(Path(hf_hub_download(repo, filename, revision=revision, local_files_only=True)))
            continue
        except Exception:
            pass  # not cached: try the network unless the user is offline
        if constants.HF_HUB_OFFLINE:
            raise _missing(name, f"{filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set")
        try:
            paths.append(Path(hf_hub_download(repo, filename, revision=revision)))
        except Exception as exc:
            raise _missing(
                name, f"{filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the download failed ({type(exc).__name__})"
            ) from exc
    return TaggerFiles(name, paths[0], paths[1])


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


@dataclass
class Labels:
    """selected_tags.csv: one name and category per model output, in output order."""

    names: list[str]
    categories: np.ndarray
    rating: np.ndarray = field(init=False)
    general: np.ndarray = field(init=False)
    character: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.categories = np.asarray(self.categories, dtype=np.int64)
        self.rating = np.flatnonzero(self.categories == RATING)
        self.general = np.flatnonzero(self.categories == GENERAL)
        self.character = np.flatnonzero(self.categories == CHARACTER)

    def __len__(self) -> int:
        return len(self.names)

    def name_rank(self) -> np.ndarray:
        """Each label's position in name order (ties in confidence are broken by it), computed once."""
        rank = self.__dict__.get("_name_rank")
        if rank is None:
            order = sorted(range(len(self.names)), key=lambda i: (self.names[i], i))
            rank = np.empty(len(self.names), dtype=np.int64)
            rank[order] = np.arange(len(self.names))
            self.__dict__["_name_rank"] = rank
        return rank

    def allowed(self, undesired: frozenset[str]) -> np.ndarray:
        """Boolean mask of the labels not in `undesired` (canonical forms), computed once per set."""
        cache = self.__dict__.setdefault("_allowed", {})
        if undesired not in cache:
            from datakit.captions import canonical

            cache[undesired] = np.array([canonical(n) not in undesired for n in self.names], dtype=bool)
        return cache[undesired]


def read_labels(path: Path) -> Labels:
    """Read selected_tags.csv (`tag_id,name,category,count`); a malformed file is a clear error."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc}") from exc
    if not rows or [h.strip() for h in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise ModelNotFoundError(f"{path} is not a WD14 {LABELS_FILE}: expected the header tag_id,name,category,count")
    try:
        names = [r[1] for r in rows[1:] if r]
        cats = [int(r[2]) for r in rows[1:] if r]
    except (IndexError, ValueError) as exc:
        raise ModelNotFoundError(f"{path}: malformed row ({exc})") from exc
    return Labels(names, np.array(cats))


# ---------------------------------------------------------------------------------------------
# Preprocessing (pixel-exact with the reference)
# ---------------------------------------------------------------------------------------------


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any transparency onto white (as the reference does), else convert to RGB."""
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """A decoded image -> the tagger's uint8 BGR size x size x 3 input (float conversion at batching)."""
    import cv2

    rgb = np.asarray(flatten_to_rgb(image))
    h, w = rgb.shape[:2]
    side = max(h, w)
    pad_x, pad_y = side - w, side - h
    # White square, the image centred (the extra pixel of an odd margin goes right/bottom).
    square = cv2.copyMakeBorder(
        rgb, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2, cv2.BORDER_CONSTANT, value=(255, 255, 255)
    )
    if side >= size:
        resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    else:
        # Enlarging: the reference uses Pillow's LANCZOS (per channel, so RGB or BGR order gives the same).
        resized = np.asarray(Image.fromarray(square).resize((size, size), resample=Image.Resampling.LANCZOS))
    # RGB -> BGR after resizing: the same pixels as flipping first, on fewer of them.
    return np.ascontiguousarray(resized[:, :, ::-1])


def load_for_tagger(path: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Open an image safely (datakit.imageio) and preprocess it; ImageError propagates (item skipped)."""
    from datakit.imageio import open_image

    loaded = open_image(path)
    return preprocess(loaded.image, size), loaded.notes


# ---------------------------------------------------------------------------------------------
# The onnxruntime session
# ---------------------------------------------------------------------------------------------


@dataclass
class TaggerSession:
    """One onnxruntime session for a whole run, with what it needs to be fed."""

    session: object
    input_name: str
    size: int
    fixed_batch: int | None  # the graph's batch dimension when it is a fixed number
    providers: list[str]  # providers the session actually uses, best first
    outputs: int  # tags in selected_tags.csv: the width every output row must have
    # The one batch shape every call runs at (the last batch padded). Kernels pick their blocking
    # and summation order by shape, so an image's probabilities would otherwise depend on how
    # many images ran beside it (up to 1.7e-3 on a real WD14 model: tag order flips on re-runs).
    batch: int | None = None

    @property
    def provider(self) -> str:
        return self.providers[0] if self.providers else "unknown"

    @property
    def on_gpu(self) -> bool:
        return self.provider != "CPUExecutionProvider"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 NHWC batch, always run at the session's one batch shape
        (the graph's fixed batch, else `self.batch`): a short batch is padded with white images."""
        n = len(batch)
        shape = self.fixed_batch or self.batch or n
        if n > shape:
            raise ValueError(f"a batch of {n} images does not fit the model's batch shape of {shape}")
        if n < shape:
            pad = np.full((shape - n, *batch.shape[1:]), 255.0, dtype=np.float32)
            batch = np.concatenate([batch, pad])
        probs = np.asarray(self.session.run(None, {self.input_name: batch})[0], dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != self.outputs:
            raise ModelNotFoundError(f"the tagger gave outputs of shape {list(probs.shape)}; {LABELS_FILE} lists {self.outputs} tags")
        return probs[:n]


def _providers_for(device: str, available: list[str]) -> list:
    """Execution providers to ask for, best first; CPU always last as the fallback."""
    # HEURISTIC: the default EXHAUSTIVE cuDNN search re-benchmarks every new batch shape (slow first batches).
    return choose_providers(device, available, cuda_options={"cudnn_conv_algo_search": "HEURISTIC", "device_id": 0})


def open_session(files: TaggerFiles, labels: Labels, *, device: str = "auto", threads: int | None = None) -> TaggerSession:
    """Load model.onnx once; read its input size and batch dimension; report the provider used."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DependencyError("the WD14 tagger needs onnxruntime: pip install onnxruntime-gpu (or onnxruntime on macOS)") from exc

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle onnxruntime threads spin by default, taking the CPU from the threads decoding the next batch
    # (and from anything else on a shared machine): measured faster without, see benchmarks/tag.py.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    providers = _providers_for(device, ort.get_available_providers())
    if providers[0] != "CPUExecutionProvider" and hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu finds CUDA/cuDNN from pip packages (e.g. torch's) only when preloaded. It
        # prints what it misses on stdout (breaking --json): the stage reports a fallback itself.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                ort.preload_dlls()
            except Exception:
                pass
    # A CUDA provider that cannot load logs a wall of errors; the stage reports the fallback itself, once.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(files.model), sess_options=opts, providers=providers)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot load {files.model} with onnxruntime: {exc}") from exc
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default, for other sessions in this process

    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
        raise ModelNotFoundError(
            f"{files.model} is not a WD14-format tagger: its input is {shape}, expected [batch, size, size, 3] (NHWC)"
        )
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    out_shape = session.get_outputs()[0].shape
    if len(out_shape) == 2 and isinstance(out_shape[1], int) and out_shape[1] != len(labels):
        raise ModelNotFoundError(f"{files.model} gives {out_shape[1]} outputs but {files.labels} lists {len(labels)} tags")
    return TaggerSession(session, inp.name, int(shape[1]), fixed, list(session.get_providers()), len(labels))


# ---------------------------------------------------------------------------------------------
# Choosing tags from probabilities
# ---------------------------------------------------------------------------------------------


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut: the midpoint of the largest gap between consecutive sorted probabilities."""
    if len(probs) < 2:
        return 0.0 if len(probs) == 0 else float(probs[0])
    ordered = np.sort(probs)[::-1]
    gaps = ordered[:-1] - ordered[1:]
    i = int(gaps.argmax())
    return float((ordered[i] + ordered[i + 1]) / 2)


@dataclass
class Selection:
    """The tags chosen for one image, as CSV names with their probabilities."""

    characters: list[tuple[str, float]]
    general: list[tuple[str, float]]
    rating: tuple[str, float] | None

    def tags(self) -> list[str]:
        """Character tags, then general tags (each by confidence), then the rating."""
        names = [n for n, _ in self.characters] + [n for n, _ in self.general]
        return names + ([self.rating[0]] if self.rating else [])

    def scores(self) -> dict[str, float]:
        pairs = self.characters + self.general + ([self.rating] if self.rating else [])
        return {n: p for n, p in pairs}


def select_tags(
    probs: np.ndarray,
    labels: Labels,
    *,
    general_threshold: float = 0.35,
    character_threshold: float = 0.85,
    mcut: bool = False,
    rating: bool = True,
    undesired: frozenset[str] = frozenset(),
) -> Selection:
    """Pick tags: per-category thresholds (>=, as the reference) or MCut; the top rating; undesired dropped.

    `undesired` holds canonical forms (datakit.captions.canonical) so any spelling matches.
    """
    probs = np.asarray(probs, dtype=np.float32)
    allowed = labels.allowed(undesired)

    name_rank = labels.name_rank()

    def pick(idx: np.ndarray, threshold: float) -> list[tuple[str, float]]:
        chosen = idx[(probs[idx] >= threshold) & allowed[idx]]
        # Highest confidence first; equal scores by name, so the order never rests on the CSV's order.
        chosen = chosen[np.lexsort((name_rank[chosen], -probs[chosen]))]
        return [(labels.names[i], float(probs[i])) for i in chosen]

    g_thr, c_thr = general_threshold, character_threshold
    if mcut:
        g_thr = mcut_threshold(probs[labels.general])
        # As SmilingWolf's reference app: MCut for characters, but never below 0.15.
        c_thr = max(0.15, mcut_threshold(probs[labels.character]))
    top_rating = None
    if rating and len(labels.rating):
        i = int(labels.rating[int(np.argmax(probs[labels.rating]))])
        if allowed[i]:
            top_rating = (labels.names[i], float(probs[i]))
    return Selection(pick(labels.character, c_thr), pick(labels.general, g_thr), top_rating)
