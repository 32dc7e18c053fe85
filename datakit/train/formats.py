"""LoRA files: kohya `.safetensors` (with ss_* / modelspec.* metadata), diffusers' layout, loading back.

Every value in a safetensors header must be a string; kohya's loaders (and A1111's metadata
viewer) parse the JSON-valued ones (ss_tag_frequency, ss_dataset_dirs, ss_network_args).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import inspect
import json
from pathlib import Path

import torch

from datakit.errors import UsageError
from datakit.imageio import write_bytes_atomic

# modelspec architecture ids (Stability AI's model spec, as kohya writes them).
ARCHITECTURES = {
    ("sd1", "epsilon"): "stable-diffusion-v1",
    ("sd1", "v_prediction"): "stable-diffusion-v1",
    ("sd2", "epsilon"): "stable-diffusion-v2-512",
    ("sd2", "v_prediction"): "stable-diffusion-v2-768-v",
    ("sdxl", "epsilon"): "stable-diffusion-xl-v1-base",
    ("sdxl", "v_prediction"): "stable-diffusion-xl-v1-base",
}
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}

DTYPES = {"fp32": torch.float32, "float": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def save_dtype(name: str | None):
    """--save-precision -> torch dtype (None: keep fp32)."""
    if name is None:
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise UsageError(f"--save-precision must be fp32, fp16 or bf16, not {name!r}") from None


def _serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


def addnet_hashes(tensors: dict[str, torch.Tensor]) -> tuple[str, str]:
    """kohya's `sshs_model_hash` (sha256 of the tensor data) and `sshs_legacy_hash` (A1111 additional-networks)."""
    data = _serialize(tensors, None)
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len:]).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x100000 + 0x10000]).hexdigest()[:8]
    return model_hash, legacy


def save_kohya(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], dtype=None) -> None:
    """Write a kohya LoRA file atomically; tensors cast to `dtype` (alpha too, as kohya does)."""
    dtype = dtype or torch.float32
    cast = {k: v.detach().to("cpu", dtype) for k, v in tensors.items()}
    meta = {k: str(v) for k, v in metadata.items() if v is not None}
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = addnet_hashes(cast)
    write_bytes_atomic(path, _serialize(cast, meta))


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a .safetensors LoRA; a clear error for anything else."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"network weights file not found: {path}")
    if path.suffix != ".safetensors":
        raise UsageError(f"--network-weights must be a kohya-format .safetensors file, not {path.name}")
    tensors = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a bad header or data
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UsageError(f"{path} is not a readable .safetensors file ({detail}); is it complete?") from None
    return tensors, metadata


def load_kohya_into(network, path: Path) -> dict:
    """Copy a kohya file's weights into a LoRANetwork; names and shapes must match exactly."""
    tensors, metadata = read_lora_file(path)
    mine = network.kohya_state_dict()
    missing = sorted(set(mine) - set(tensors))
    unknown = sorted(set(tensors) - set(mine))
    if missing or unknown:
        detail = f"{len(missing)} of our modules missing from it" + (f" (e.g. {missing[0]})" if missing else "")
        detail += f", {len(unknown)} unknown keys" + (f" (e.g. {unknown[0]})" if unknown else "")
        raise UsageError(f"{Path(path).name} does not match this base model and network settings: {detail}")
    by_name = {m.lora_name: m for m in network.modules_list()}
    with torch.no_grad():
        for key, value in tensors.items():
            name, _, what = key.partition(".")
            mod = by_name[name]
            target = {"lora_down.weight": mod.lora_down.weight, "lora_up.weight": mod.lora_up.weight, "alpha": mod.alpha}[what]
            if target.shape != value.shape:
                raise UsageError(f"{Path(path).name}: {key} has shape {tuple(value.shape)}, expected {tuple(target.shape)} "
                                 "(use the same --rank/--conv-rank as the file)")
            target.copy_(value.to(target.dtype))
            if what == "alpha":
                mod.scale = float(value) / mod.rank
    return metadata


def diffusers_state_dict(network, base) -> dict[str, torch.Tensor]:
    """diffusers/peft layout: `unet.<path>.lora_A.weight` / `lora_B.weight`, alpha/rank folded into B.

    diffusers' own format stores no alpha (it assumes alpha = rank), so folding the scale into
    lora_B gives the same output as the kohya file.
    """
    paths = {}
    for prefix, model in [("unet", base.unet)] + [
        ("text_encoder" if i == 0 else f"text_encoder_{i + 1}", te) for i, te in enumerate(base.text_encoders)
    ]:
        for path, mod in model.named_modules():
            paths[id(mod)] = f"{prefix}.{path}"
    out = {}
    for m in network.modules_list():
        where = paths[id(m._org[0])]
        out[f"{where}.lora_A.weight"] = m.lora_down.weight.detach()
        out[f"{where}.lora_B.weight"] = (m.lora_up.weight.detach() * m.scale)
    return out


def save_diffusers(network, base, folder: Path, dtype=None) -> Path:
    """Write `pytorch_lora_weights.safetensors` in diffusers' layout into folder."""
    dtype = dtype or torch.float32
    tensors = {k: v.to("cpu", dtype) for k, v in diffusers_state_dict(network, base).items()}
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / "pytorch_lora_weights.safetensors"
    write_bytes_atomic(dest, _serialize(tensors, {"format": "pt"}))
    return dest


# Optimizer keywords that choose an implementation, not the maths: kohya users never pass them.
_IMPLEMENTATION_ARGS = {"params", "lr", "foreach", "fused", "capturable", "differentiable"}


def kohya_optimizer_name(optimizer) -> str:
    """ss_optimizer as kohya writes it: `module.Class`, plus `(k=v,...)` for the settings a kohya user would
    pass as --optimizer_args to get this optimizer (those that differ from the class's defaults)."""
    from datakit.train.checkpoint import optimizer_class_path

    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    try:
        params = inspect.signature(type(inner)).parameters
    except (TypeError, ValueError):
        params = {}
    args = []
    for key, value in getattr(inner, "defaults", {}).items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if (key in _IMPLEMENTATION_ARGS or default is inspect.Parameter.empty or isinstance(value, torch.Tensor)
                or value == default):
            continue
        args.append(f"{key}={value}")
    return optimizer_class_path(inner) + (f"({','.join(args)})" if args else "")


def kohya_bucket_info(spec, entries) -> dict:
    """ss_bucket_info as kohya writes it: the used buckets sorted by (w, h), each with its image count
    including repeats, and the mean |bucket aspect - image aspect| over the images (without repeats)."""
    import numpy as np

    counts: dict[tuple[int, int], int] = {}
    errors = []
    for e in entries:
        w, h = e.bucket
        counts[(w, h)] = counts.get((w, h), 0) + spec.subsets[e.subset].num_repeats
        errors.append(abs(w / h - e.size[0] / e.size[1]))
    buckets = {str(i): {"resolution": [w, h], "count": n} for i, ((w, h), n) in enumerate(sorted(counts.items()))}
    return {"buckets": buckets, "mean_img_ar_error": float(np.mean(errors)) if errors else 0}


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path) -> str:
    """The sha256 of a file's bytes (remembered per path, size and mtime: a base model is hashed once)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def a1111_old_hash(path) -> str:
    """A1111's old model hash (kohya's model_hash): sha256 of the 64 KiB at offset 1 MiB, 8 hex digits."""
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        return hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]


def base_model_hashes(model: str) -> dict[str, str]:
    """ss_sd_model_name and, when the model is a local path, ss_sd_model_hash (A1111's old hash: sha256 of
    64 KiB at 1 MiB, 8 hex digits) and ss_new_sd_model_hash (sha256 of the file), as kohya computes them.
    A folder gets kohya's "IsADirectory" for both; a Hugging Face id gets no hashes."""
    path = Path(str(model)).expanduser()
    if not path.exists():
        return {"ss_sd_model_name": str(model)}
    out = {"ss_sd_model_name": path.name}
    if path.is_dir():
        out["ss_sd_model_hash"] = out["ss_new_sd_model_hash"] = "IsADirectory"
    else:
        out["ss_sd_model_hash"], out["ss_new_sd_model_hash"] = a1111_old_hash(path), sha256_file(path)
    return out


def build_metadata(*, cfg, base, plan, network, optimizer, step: int, epoch: int, started: float,
                   trigger: str | None, tag_frequency: dict, dataset_dirs: dict,
                   bucket_info: dict | None) -> dict[str, str]:
    """kohya's ss_* keys and Stability AI's modelspec.* keys (all strings).

    bucket_info: kohya_bucket_info(spec, entries) when bucketing, else None.
    """
    now = _dt.datetime.now(_dt.timezone.utc)
    pred = base.prediction_type
    arch = ARCHITECTURES.get((base.family, pred), "stable-diffusion-v1")
    width, height = plan.resolution
    network_args = {}
    if network.conv_rank:
        network_args.update(conv_dim=str(network.conv_rank), conv_alpha=str(network.conv_alpha))
    for k, v in network.dropouts.items():
        if v:
            network_args[k] = str(v)
    meta = {
        "ss_session_id": str(abs(hash((started, cfg.seed))) % (2**31)),
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(now.timestamp()),
        "ss_output_name": cfg.output_name,
        "ss_learning_rate": str(cfg.lr),
        "ss_unet_lr": str(cfg.unet_lr if cfg.unet_lr is not None else cfg.lr),
        "ss_text_encoder_lr": (str(cfg.text_encoder_lr if cfg.text_encoder_lr is not None else cfg.lr)
                               if network.trains_text_encoder else None),
        # kohya counts images x repeats (train_util.py, DreamBoothDataset)
        "ss_num_train_images": str(sum(s["images"] * s["repeats"] for s in plan.subsets if not s["is_reg"])),
        "ss_num_reg_images": str(sum(s["images"] * s["repeats"] for s in plan.subsets if s["is_reg"])),
        "ss_num_batches_per_epoch": str(plan.steps_per_epoch),
        "ss_num_epochs": str(plan.epochs),
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_max_train_steps": str(plan.max_steps),
        "ss_batch_size_per_device": str(plan.batch_size),
        "ss_total_batch_size": str(plan.batch_size * plan.world_size * cfg.grad_accum),
        "ss_gradient_accumulation_steps": str(cfg.grad_accum),
        "ss_lr_warmup_steps": str(cfg.warmup_steps),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_optimizer": kohya_optimizer_name(optimizer),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_full_fp16": "False",
        "ss_v2": str(base.family == "sd2"),
        "ss_base_model_version": BASE_MODEL_VERSION.get(base.family, "sd_v1"),
        "ss_v_parameterization": str(pred == "v_prediction"),
        "ss_zero_terminal_snr": str(bool(cfg.zero_terminal_snr)),
        "ss_resolution": f"({width}, {height})",
        "ss_clip_skip": str(cfg.clip_skip),
        "ss_max_token_length": str(cfg.max_token_length),
        "ss_cache_latents": "True",
        "ss_seed": str(cfg.seed),
        "ss_lowram": "False",
        "ss_noise_offset": str(cfg.noise_offset),
        "ss_min_snr_gamma": str(cfg.min_snr_gamma),
        "ss_prior_loss_weight": str(cfg.prior_loss_weight),
        "ss_max_grad_norm": str(cfg.max_grad_norm),
        "ss_keep_tokens": str(plan.keep_tokens),
        "ss_shuffle_caption": str(plan.shuffle_caption),
        "ss_caption_dropout_rate": str(plan.caption_dropout_rate),
        "ss_caption_tag_dropout_rate": str(plan.caption_tag_dropout_rate),
        "ss_flip_aug": str(plan.flip_aug),
        "ss_enable_bucket": str(plan.enable_bucket),
        "ss_bucket_info": json.dumps(bucket_info) if bucket_info else None,
        "ss_tag_frequency": json.dumps(tag_frequency, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dataset_dirs, ensure_ascii=False),
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(network.rank),
        "ss_network_alpha": str(network.alpha),
        "ss_network_dropout": str(network.dropouts.get("dropout") or None),
        "ss_network_args": json.dumps(network_args) if network_args else None,
        "ss_training_comment": f"datakit; trigger: {trigger}" if trigger else "datakit",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{arch}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if base.family == "sdxl" else "diffusers",
        "modelspec.title": f"{cfg.output_name}",
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": now.strftime("%Y-%m-%dT%H:%M:%S"),
        "modelspec.prediction_type": "v" if pred == "v_prediction" else "epsilon",
        "modelspec.encoder_layer": str(cfg.clip_skip) if cfg.clip_skip > 1 else None,
        "modelspec.trigger_phrase": trigger,
    }
    meta.update(base_model_hashes(cfg.base_model) if cfg.base_model else {"ss_sd_model_name": base.name})
    return {k: v for k, v in meta.items() if v is not None}


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Size of the tensors in bytes (for the dry-run estimate)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def read_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}

