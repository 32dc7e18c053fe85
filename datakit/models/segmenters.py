"""rembg segmenter sessions: resolve a model name or ONNX file, pick providers explicitly, predict masks.

A model is used only when the user names it (`--model` or $DATAKIT_REMBG_MODEL). Names are rembg's
(isnet-anime, u2net, birefnet-general, ...), looked up where rembg keeps its downloads; a path to an
`.onnx` file is loaded through rembg's custom U2-Net session (320x320 input, ImageNet normalisation,
one 1x1xHxW mask output). Nothing is downloaded here: a missing model is one clear error saying what
to fetch and where to put it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datakit.errors import DependencyError, ModelNotFoundError, UsageError
from datakit.models import onnx_providers

ENV_MODEL = "DATAKIT_REMBG_MODEL"


def requested_model(model: str | None) -> str | None:
    """The model the user named: the flag, else the environment variable, else None."""
    value = model if model else os.environ.get(ENV_MODEL)
    return value.strip() if value and value.strip() else None


@dataclass(frozen=True)
class SegmenterSpec:
    """What to load (picklable): a rembg session name and, for custom files, the ONNX path."""

    name: str
    path: str | None = None
    device: str = "auto"

    @property
    def label(self) -> str:
        return self.path or self.name


def _rembg():
    try:
        import rembg  # noqa: F401
        from rembg.sessions import sessions_class
    except ImportError as exc:  # pragma: no cover - rembg is a core dependency
        raise DependencyError(f"--method rembg needs the package 'rembg' ({exc}); install it with: pip install rembg") from exc
    return {cls.name(): cls for cls in sessions_class}


def resolve_segmenter(model: str, device: str = "auto") -> SegmenterSpec:
    """Turn --model into a SegmenterSpec, checking the weights exist (ModelNotFoundError if not)."""
    path = Path(model).expanduser()
    looks_like_path = model.lower().endswith(".onnx") or os.sep in model or (os.altsep and os.altsep in model)
    if looks_like_path or path.is_file():
        if not path.is_file():
            raise ModelNotFoundError(f"segmenter model file not found: {path}")
        return SegmenterSpec(name="u2net_custom", path=str(path.resolve()), device=device)
    classes = _rembg()
    cls = classes.get(model)
    if cls is None or model.endswith("_custom") or model in ("sam", "atlascloud", "withoutbg"):
        usable = sorted(k for k in classes if not k.endswith("_custom") and k not in ("sam", "atlascloud", "withoutbg"))
        raise UsageError(f"unknown rembg model '{model}': use one of {', '.join(usable)}, or a path to an .onnx file")
    fname = f"{model}.onnx"
    found = cls.resolve_existing(fname)
    if found is None:
        where = cls.model_dir()
        raise ModelNotFoundError(
            f"rembg model '{model}' is not downloaded: rembg looks for {fname} in {where} (and {cls.legacy_home()}); "
            f"fetch it where there is internet with `rembg d {model}` and copy it there "
            "(U2NET_HOME or REMBG_HOME choose the folder), or pass --model /path/to/model.onnx"
        )
    return SegmenterSpec(name=model, path=None, device=device)


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Providers to ask onnxruntime for, best first, CPU always last."""
    return onnx_providers.choose_providers(device, available)


@dataclass
class Segmenter:
    """One loaded rembg session, reused for every image of a run."""

    spec: SegmenterSpec
    session: object
    providers: list[str]  # what the session actually runs on, best first
    notes: list[str] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.providers[0] if self.providers else "unknown"

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """The model's soft foreground mask (float32 0..1, the image's size)."""
        from PIL import Image

        masks = self.session.predict(Image.fromarray(np.ascontiguousarray(rgb[:, :, :3])))
        mask = masks[0] if isinstance(masks, (list, tuple)) else masks
        arr = np.asarray(mask.convert("L") if hasattr(mask, "convert") else mask, dtype=np.float32)
        if arr.shape != rgb.shape[:2]:
            import cv2

            arr = cv2.resize(arr, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
        return arr / 255.0


def load_segmenter(spec: SegmenterSpec) -> Segmenter:
    """Create the rembg session once, with explicitly chosen providers; report which one is used."""
    classes = _rembg()
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover
        raise DependencyError("--method rembg needs onnxruntime: pip install onnxruntime-gpu (onnxruntime on macOS)") from exc
    if spec.device in ("cuda", "auto") and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):
            ort.preload_dlls()  # lets onnxruntime-gpu find CUDA/cuDNN shipped in pip packages
    providers = choose_providers(spec.device, ort.get_available_providers())
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # a missing CUDA library is reported by us, once, plainly
    cls = classes[spec.name]
    kwargs: dict = {"providers": providers}
    if spec.path:
        cls = _any_path_session(cls)
        kwargs["model_path"] = spec.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rembg's own fallback warning: we report it below
            session = cls(spec.name, opts, **kwargs)
    except Exception as exc:
        raise ModelNotFoundError(f"cannot load segmenter {spec.label}: {type(exc).__name__}: {exc}") from exc
    active = list(session.inner_session.get_providers())
    notes = []
    if spec.device == "cuda" and "CUDAExecutionProvider" not in active:
        notes.append(f"--device cuda was asked for but the segmenter runs on {active[0] if active else 'CPU'}")
    return Segmenter(spec=spec, session=session, providers=active, notes=notes)


def _any_path_session(base):
    """rembg's custom session, allowed to read an ONNX file anywhere (rembg limits it to its home folder)."""

    class AnyPathSession(base):
        @classmethod
        def download_models(cls, *args, **kwargs):
            return kwargs["model_path"]

    AnyPathSession.__name__ = f"AnyPath{base.__name__}"
    return AnyPathSession


_CACHE: dict[SegmenterSpec, Segmenter] = {}


def get_segmenter(spec: SegmenterSpec) -> Segmenter:
    """The process's session for a spec (loaded on first use, then reused)."""
    seg = _CACHE.get(spec)
    if seg is None:
        seg = _CACHE[spec] = load_segmenter(spec)
    return seg


def loaded_segmenter(spec: SegmenterSpec) -> Segmenter | None:
    """The session already loaded in this process for a spec, if any."""
    return _CACHE.get(spec)
