"""Resumable training state as safetensors + JSON (never pickles): weights, EMA, optimizer, RNG, step.

A checkpoint is a folder `step-NNNNNNN/` holding `tensors.safetensors` (model and EMA weights, the
AdamW moments, torch's RNG state as a uint8 tensor) and `state.json` (step, optimizer
hyper-parameters and step counts, numpy's generator state, the run's config, the loss log tail). It
is written under a temporary name and renamed, so a run killed while saving leaves the previous
checkpoint as the latest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val.detach().clone().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = val
    for name, val in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save(root: Path, step: int, *, modules: dict[str, torch.nn.Module], ema: dict[str, torch.Tensor] | None,
         optimizer: torch.optim.Optimizer, extra: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` under root (atomically) and keep only the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"model.{name}.{k}"] = v.detach().clone().contiguous()
    for k, v in (ema or {}).items():
        tensors[f"ema.{k}"] = v.detach().clone().contiguous()
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(tensors, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **extra}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint folder under root, or None."""
    done = [p for p in sorted(root.glob(f"{PREFIX}*")) if (p / "state.json").is_file()]
    return done[-1] if done else None


def resume(root: Path, *, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict]:
    """Restore from the newest checkpoint under root, saying so: (state.json, EMA), or ({"step": 0}, {}) for a fresh run."""
    ckpt = latest(root)
    if ckpt is None:
        return {"step": 0}, {}
    meta, ema = load(ckpt, modules=modules, optimizer=optimizer)
    elapsed, cpu = meta.get("elapsed_s"), meta.get("cpu_s")
    hours = f"; {elapsed / 3600:.2f} h wall, {cpu / 3600:.2f} h CPU so far" if elapsed is not None and cpu is not None else ""
    print(f"resumed from {ckpt} (step {meta['step']}{hours})", flush=True)
    return meta, ema


def load(path: Path, *, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict]:
    """Restore modules (and optimizer, torch RNG) from a checkpoint; returns (state.json, EMA tensors)."""
    tensors = load_file(str(path / "tensors.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    for name, mod in modules.items():
        prefix = f"model.{name}."
        mod.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is not None:
        _load_optimizer(optimizer, tensors, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    return meta, ema
