"""A training run's resumable state, stored without pickle: tensors in safetensors, the rest in JSON.

A checkpoint folder holds `state.safetensors` (the trainable network's tensors and every tensor of
the optimizer, scheduler and RNG states) and `state.json` (everything else: the step, the settings,
the optimizer's param groups and per-parameter scalars, with each tensor replaced by a reference
into the safetensors file). Reading either file never runs code, so a checkpoint folder someone
shares is as safe to `--resume` as a LoRA file.

Exact resume: tensors are stored bit for bit and Python floats as their shortest repr (which
round-trips exactly), so an optimizer, scheduler and grad scaler restored from the folder continue
exactly as the uninterrupted run would have.

Older datakit versions wrote a pickled `state.pt`; such a folder is refused with a message (it is
never opened), since unpickling it could run arbitrary code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from datakit.errors import UsageError

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
LEGACY_STATE = "state.pt"  # pickled by datakit before this format; refused, never opened
FORMAT = "datakit-training-state"
VERSION = 1

# One-key dicts tagging what JSON has no type for; plain dicts whose keys start with "__" are
# stored as pairs, so a tag can never be mistaken for data.
_TENSOR, _NDARRAY, _TUPLE, _PAIRS, _FLOAT, _DTYPE = "__tensor__", "__ndarray__", "__tuple__", "__pairs__", "__float__", "__dtype__"


@dataclass
class RngState:
    """The global random generators: torch (CPU and each CUDA device), numpy's legacy global, Python's."""

    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor]
    numpy: tuple
    python: tuple


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped."""

    step: int
    network: dict[str, torch.Tensor]
    optimizer: dict | None = None
    optimizer_class: str | None = None  # e.g. "torch.optim.adamw.AdamW": resuming with another optimizer is refused
    lr_scheduler: dict | None = None
    scaler: dict | None = None
    rng: RngState | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # plain JSON values (seed, method, ...)


# ---- capturing and applying ------------------------------------------------------------------

def capture_rng_state() -> RngState:
    """The current state of every global random generator."""
    cuda = [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return RngState(torch_cpu=torch.get_rng_state().clone(), cuda=cuda,
                    numpy=(kind, keys.copy(), int(pos), int(has_gauss), float(gauss)), python=random.getstate())


def restore_rng_state(rng: RngState) -> None:
    """Put every global random generator back; CUDA states only when the device count matches."""
    torch.set_rng_state(rng.torch_cpu)
    if rng.cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(rng.cuda):
        torch.cuda.set_rng_state_all(rng.cuda)
    kind, keys, pos, has_gauss, gauss = rng.numpy
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng.python
    random.setstate((version, tuple(internal), gauss_next))


def optimizer_class_path(optimizer) -> str:
    """The optimizer's class as `module.Class` (through accelerate's wrapper), as kohya names it."""
    inner = getattr(optimizer, "optimizer", optimizer)
    cls = type(inner)
    return f"{cls.__module__}.{cls.__name__}"


def capture_training_state(step: int, network: torch.nn.Module, *, optimizer=None, lr_scheduler=None, scaler=None,
                           settings: dict | None = None, rng: bool = True) -> TrainingState:
    """Snapshot a run after `step` optimizer steps (CPU copies of every tensor)."""
    return TrainingState(
        step=int(step),
        network={k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()},
        optimizer=_cpu_copy(optimizer.state_dict()) if optimizer is not None else None,
        optimizer_class=optimizer_class_path(optimizer) if optimizer is not None else None,
        lr_scheduler=_cpu_copy(lr_scheduler.state_dict()) if lr_scheduler is not None else None,
        scaler=_cpu_copy(scaler.state_dict()) if scaler is not None else None,
        rng=capture_rng_state() if rng else None,
        settings=dict(settings or {}),
    )


def _cpu_copy(obj):
    """state_dict() values reference the live tensors: snapshot them (nested containers kept as they are)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def apply_training_state(state: TrainingState, *, network: torch.nn.Module, optimizer=None, lr_scheduler=None,
                         scaler=None, restore_rng: bool = True, source: str = "checkpoint",
                         what: str = "--resume") -> int:
    """Load a state into a freshly built run (same settings); returns the step to continue from.

    Anything that does not fit (other network settings, another optimizer, missing parts) is a
    UsageError naming `source`; nothing is half-applied to the optimizer.
    """
    try:
        missing, unexpected = network.load_state_dict(state.network, strict=False)
    except RuntimeError as exc:  # shapes differ
        raise UsageError(f"{what}: {source} was written with other network settings: "
                         f"{' '.join(str(exc).split())[:300]}") from None
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UsageError(f"{what}: {source} was written with other network settings (rank, conv, text encoder): "
                         f"{len(missing)} tensors missing, {len(unexpected)} unexpected (e.g. {example})")
    if optimizer is not None:
        if state.optimizer is None:
            raise UsageError(f"{what}: {source} holds no optimizer state")
        mine = optimizer_class_path(optimizer)
        if state.optimizer_class and state.optimizer_class != mine:
            raise UsageError(f"{what}: {source} was trained with {state.optimizer_class}, this run uses {mine}; "
                             "resume with the same --optimizer")
        try:
            optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise UsageError(f"{what}: the optimizer state in {source} does not fit this run "
                             f"({' '.join(str(exc).split())[:200]}); use the settings it was trained with") from None
    if lr_scheduler is not None and state.lr_scheduler is not None:
        lr_scheduler.load_state_dict(state.lr_scheduler)
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    if restore_rng and state.rng is not None:
        restore_rng_state(state.rng)
    return state.step


# ---- files -----------------------------------------------------------------------------------

def has_training_state(folder: Path) -> bool:
    """A checkpoint folder: this format, or an old pickled one (listed so that resuming it is refused clearly)."""
    folder = Path(folder)
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE).is_file()


def save_training_state(folder: Path, state: TrainingState) -> None:
    """Write state.safetensors, then state.json (which names the tensors file's sha256), each atomically."""
    from safetensors.torch import save

    from datakit.imageio import write_bytes_atomic, write_text_atomic

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.network.items():
        tensors[f"network/{name}"] = _storable(value)
    body = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(state.step),
        "network": sorted(state.network),
        "optimizer_class": state.optimizer_class,
        "optimizer": _encode(state.optimizer, tensors),
        "lr_scheduler": _encode(state.lr_scheduler, tensors),
        "scaler": _encode(state.scaler, tensors),
        "rng": _encode(None if state.rng is None else [state.rng.torch_cpu, state.rng.cuda, state.rng.numpy,
                                                      state.rng.python], tensors),
        "settings": _encode(state.settings, tensors),
    }
    data = save(_unshared(tensors))
    body["tensors_sha256"] = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / STATE_TENSORS, data)
    write_text_atomic(folder / STATE_JSON, json.dumps(body, allow_nan=False, indent=1) + "\n")


def load_training_state(folder: Path, *, what: str = "--resume") -> TrainingState:
    """Read a checkpoint folder's state: JSON and safetensors only, never a pickle."""
    from safetensors.torch import load

    folder = Path(folder)
    json_path, tensor_path = folder / STATE_JSON, folder / STATE_TENSORS
    if not json_path.is_file():
        if (folder / LEGACY_STATE).is_file():
            raise UsageError(
                f"{what}: {folder} was written by an older datakit as a pickle ({LEGACY_STATE}), which datakit no "
                "longer opens: unpickling a file can run any code in it. Its LoRA file is safe to reuse: start a "
                "new run with --network-weights on the .safetensors file in that folder (the optimizer starts fresh)")
        raise UsageError(f"{what}: {folder} is not a checkpoint folder (no {STATE_JSON})")
    try:
        body = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{what}: {json_path} is not readable JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise UsageError(f"{what}: {json_path} is not a datakit training state")
    if not isinstance(body.get("version"), int) or body["version"] > VERSION:
        raise UsageError(f"{what}: {json_path} was written by a newer datakit (format version {body.get('version')}); "
                         "update datakit to resume it")
    try:
        data = tensor_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{what}: {folder} is incomplete: cannot read {STATE_TENSORS} ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != body.get("tensors_sha256"):
        raise UsageError(f"{what}: {tensor_path} does not belong to {json_path} (changed or damaged since it was saved)")
    try:
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for a bad header
        raise UsageError(f"{what}: {tensor_path} is not a valid safetensors file ({exc})") from None
    try:
        names = body["network"]
        network = {name: tensors[f"network/{name}"] for name in names}
        rng = _decode(body.get("rng"), tensors)
        step = body["step"]
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"bad step {step!r}")
        return TrainingState(
            step=step,
            network=network,
            optimizer=_decode(body.get("optimizer"), tensors),
            optimizer_class=body.get("optimizer_class"),
            lr_scheduler=_decode(body.get("lr_scheduler"), tensors),
            scaler=_decode(body.get("scaler"), tensors),
            rng=RngState(*rng) if rng is not None else None,
            settings=_decode(body.get("settings"), tensors) or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{what}: {json_path} is damaged ({type(exc).__name__}: {exc})") from None


@contextlib.contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside `dest`; it replaces `dest` only when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}")
    old = dest.with_name(f".old-{dest.name}")
    for leftover in (tmp, old):  # from a run killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


# ---- nested values <-> JSON + tensor table -------------------------------------------------------

def _storable(t: torch.Tensor) -> torch.Tensor:
    # On the CPU and contiguous; shared storages are separated in save_training_state (safetensors refuses them).
    return t.detach().to("cpu").contiguous()


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy only the tensors whose storage another one already uses."""
    seen: set[int] = set()
    out = {}
    for key, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        out[key] = t.clone() if ptr is not None and ptr in seen else t
        if ptr is not None:
            seen.add(ptr)
    return out


def _encode(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, torch.Tensor):
        key = f"state/{len(tensors)}"
        tensors[key] = _storable(obj)
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("a training state cannot hold a numpy array of Python objects")
        key = f"state/{len(tensors)}"
        raw = np.frombuffer(np.ascontiguousarray(obj).tobytes(), dtype=np.uint8)
        tensors[key] = torch.from_numpy(raw.copy())  # raw bytes: any numpy dtype, byte order kept in the JSON
        return {_NDARRAY: [key, obj.dtype.str, list(obj.shape)]}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else {_FLOAT: repr(value)}
    if isinstance(obj, torch.dtype):
        return {_DTYPE: str(obj).removeprefix("torch.")}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {_PAIRS: [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"a training state cannot hold a {type(obj).__module__}.{type(obj).__qualname__}")


def _decode(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (tag, value), = obj.items()
        if tag == _TENSOR:
            return tensors[value]
        if tag == _NDARRAY:
            key, dtype, shape = value
            dtype = np.dtype(str(dtype))
            if dtype.hasobject:
                raise ValueError("numpy arrays of Python objects are refused")
            return np.frombuffer(tensors[key].numpy().tobytes(), dtype=dtype).reshape([int(n) for n in shape]).copy()
        if tag == _TUPLE:
            return tuple(_decode(v, tensors) for v in value)
        if tag == _PAIRS:
            return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in value}
        if tag == _FLOAT:
            return float(value)
        if tag == _DTYPE:
            dtype = getattr(torch, str(value), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {value!r}")
            return dtype
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _hashable(key):
    if isinstance(key, (list, dict, torch.Tensor)):
        raise TypeError(f"a dict key cannot be a {type(key).__name__}")
    return key
