"""The `--dry-run` estimate: memory and time per step from the actual base model, without its weights.

The base model is built on the meta device from the configs the real loader would use
(datakit.train.meta_model: parameters, FLOPs and the activations kept for backward at the plan's
resolution and batch size).

The memory model (bytes on the training device during the steps, a rough figure):

  frozen UNet weights in the weight dtype (2 bytes in fp16/bf16, else 4)
  + text encoder weights in that dtype, unless their outputs are cached (frozen encoder, fixed captions)
  + trainable parameters (LoRA or hypernetwork) x (4 fp32 weight + 4 gradient + optimizer state bytes,
    8 for AdamW's two fp32 moments)
  + activations (measured as above; they scale with resolution^2 and batch size)
  + 10 % for the allocator and workspaces, and 0.4 GB for the CUDA context on a GPU.
  The VAE is on the device only while latents are cached (before the steps), so the figure is the
  larger of that phase and the steps.

Time per step: the training FLOPs (forward + backward of a frozen UNet ~ 2.15 x forward, one more
forward with gradient checkpointing; text encoders when not cached) divided by the effective FLOP/s
of this device on this UNet, plus a fixed per-step overhead. `--dry-run` measures that rate: a
scaled-down slice of the UNet (one block per level, random weights; datakit.train.speed_probe) runs
forward and backward on the device at the plan's size. Without measuring (or when the slice cannot
run) a rough rate per device kind is assumed, which can be off several times.

When the configs cannot be read, the estimate falls back to a per-family table, with a note.
"""

from __future__ import annotations

import json
import os

from datakit.train.meta_model import (MetaModel, build_meta_model, count_params, locate_configs, profile_unet,
                                     text_encoder_flops, trainable_params, trains_text_encoder)

# Fallback figures per family: parameters of the UNet / text encoders (fp32 bytes scale).
FAMILY_PARAMS = {"sd1": (859.5e6, 123e6), "sd2": (865.9e6, 340e6), "sdxl": (2567.5e6, 817e6)}

# Optimizer state bytes per trainable parameter (fp32 unless the optimizer quantises).
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw8bit": 2, "prodigy": 16, "lion": 4, "adafactor": 4, "sgd": 0}

# Effective training throughput in FLOP/s (not the datasheet peak: what UNet training usually reaches).
THROUGHPUT = {("cuda", True): 20e12, ("cuda", False): 6e12, ("mps", True): 4e12, ("mps", False): 2e12}
CPU_FLOPS_PER_CORE = 30e9
STEP_OVERHEAD_S = {"cuda": 0.05, "mps": 0.1, "cpu": 0.05}
BACKWARD_FACTOR = 1.15  # backward of a frozen network (input gradients only) / its forward
CUDA_CONTEXT_BYTES = 0.4 * 2**30
ALLOCATOR_OVERHEAD = 0.10


# ---- the estimate -------------------------------------------------------------------------------

def _half(cfg, device_type: str, mixed: str | None) -> bool:
    if mixed is not None:
        return mixed in ("fp16", "bf16")
    return cfg.mixed_precision in ("fp16", "bf16") or (cfg.mixed_precision == "auto" and device_type == "cuda")


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def throughput(device_type: str, half: bool) -> float:
    """Rough effective FLOP/s for a device kind."""
    if device_type == "cpu":
        return CPU_FLOPS_PER_CORE * _cpu_cores()
    return THROUGHPUT.get((device_type, half), 2e12)


def text_is_cached(plan, cfg) -> bool:
    """The trainer caches text-encoder outputs when the encoder is frozen and captions never change."""
    return plan.captions_fixed and not trains_text_encoder(cfg)


def estimate(plan, cfg, family: str, device_type: str, mixed: str | None = None, *, measure: bool = False) -> dict:
    """Memory (GB) and time per step for this plan on this base model; the family table when configs fail.

    measure: time a scaled-down slice of the UNet on the device (datakit.train.speed_probe) instead of
    assuming a FLOP rate for the device kind.
    """
    from datakit.errors import DatakitError

    try:
        configs = locate_configs(cfg.base_model, family=cfg.family, config_dir=cfg.config_dir)
        meta = build_meta_model(configs)
    except (DatakitError, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        return _fallback(plan, cfg, family, device_type, mixed, "the base model's configs could not be read", exc)
    try:
        return model_estimate(plan, cfg, meta, device_type, mixed, source=configs.source, notes=configs.notes,
                              measure=measure)
    except Exception as exc:  # an unusual architecture the meta pass cannot run must not stop a dry run
        return _fallback(plan, cfg, meta.family, device_type, mixed, "the model could not be profiled on the meta device", exc)


def _fallback(plan, cfg, family: str, device_type: str, mixed: str | None, why: str, exc: BaseException) -> dict:
    est = family_table_estimate(plan, cfg, family, device_type, mixed)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    est["notes"].append(f"{why} ({detail}); using typical {family} figures")
    return est


def model_estimate(plan, cfg, meta: MetaModel, device_type: str, mixed: str | None = None, *,
                   source: str = "", notes: list[str] | None = None, measure: bool = False) -> dict:
    """The estimate for a meta-device model (see the module docstring for the model behind it)."""
    import torch

    notes = list(notes or [])
    half = _half(cfg, device_type, mixed)
    dtype = (torch.bfloat16 if mixed != "fp16" else torch.float16) if half else torch.float32
    wbytes = 2 if half else 4
    unet_p, vae_p = count_params(meta.unet), count_params(meta.vae)
    te_ps = [count_params(te) for te in meta.text_encoders]
    trainable = trainable_params(meta, cfg)
    batch = max(1, int(plan.batch_size))
    tokens = 77 * max(1, int(cfg.max_token_length) // 75)
    prof = profile_unet(meta, batch=batch, resolution=tuple(plan.resolution), dtype=dtype, tokens=tokens)
    cached_text = text_is_cached(plan, cfg)

    activations = prof.checkpointed_bytes if cfg.gradient_checkpointing else prof.saved_bytes
    state = OPTIMIZER_STATE_BYTES.get(str(cfg.optimizer).lower(), 8)
    parts = {
        "unet_weights": unet_p * wbytes,
        "text_encoder_weights": 0 if cached_text else sum(te_ps) * wbytes,
        "trainable_and_optimizer": trainable * (4 + 4 + state),
        "activations": activations,
    }
    steps_bytes = sum(parts.values())
    # Latent caching (before the steps): the UNet and text encoders are placed, the VAE encodes (in fp32).
    vae_bytes = vae_p * 4
    caching_bytes = unet_p * wbytes + sum(te_ps) * wbytes + vae_bytes
    peak = max(steps_bytes, caching_bytes) * (1 + ALLOCATOR_OVERHEAD)
    if device_type == "cuda":
        peak += CUDA_CONTEXT_BYTES

    te_flops = 0 if cached_text else text_encoder_flops(meta, batch=batch, tokens=tokens)
    if trains_text_encoder(cfg):
        te_flops *= 1 + BACKWARD_FACTOR + 1  # its LoRA needs weight-side gradients too
    per_micro = prof.forward_flops * (1 + BACKWARD_FACTOR + (1 if cfg.gradient_checkpointing else 0)) + te_flops
    step_flops = per_micro * max(1, int(cfg.grad_accum))
    rate, timed = throughput(device_type, half), None
    if measure:
        timed = measured_rate(meta, batch=batch, resolution=tuple(plan.resolution), tokens=tokens, dtype=dtype,
                              device_type=device_type, notes=notes)
        rate = timed or rate
    step_s = step_flops / rate + STEP_OVERHEAD_S.get(device_type, 0.1)
    if timed:
        notes.append(f"time from a slice of the UNet timed on {device_type}: {rate / 1e9:.1f} GFLOP/s effective")
    elif device_type == "cpu":
        notes.append(f"CPU time assumes ~{CPU_FLOPS_PER_CORE * _cpu_cores() / 1e9:.0f} GFLOP/s ({_cpu_cores()} cores)")
    return {
        "basis": "model configs",
        "source": source,
        "family": meta.family,
        "params": {"unet": unet_p, "text_encoders": te_ps, "vae": vae_p, "trainable": trainable},
        "memory_gb": _round(peak / 2**30),
        "memory_bytes": int(peak),
        "memory_parts_gb": {k: round(v / 2**30, 3) for k, v in parts.items()},
        "memory_parts_bytes": {k: int(v) for k, v in parts.items()},
        "text_encoder_cached": cached_text,
        "step_tflops": round(step_flops / 1e12, 3),
        "step_flops": int(step_flops),
        "seconds_per_step": _round(step_s),
        "total_minutes": _round(step_s * plan.max_steps / 60),
        "time_basis": "measured" if timed else "assumed rate",
        "flops_per_s": rate,
        "notes": notes,
    }


def measured_rate(meta: MetaModel, *, batch: int, resolution, tokens: int, dtype, device_type: str,
                  notes: list[str]) -> float | None:
    """Effective training FLOP/s of this UNet on this device, from a timed slice (None when it cannot run)."""
    from datakit.train.speed_probe import time_slice

    down = 2 ** (len(meta.vae.config.block_out_channels) - 1) if meta.vae is not None else 8
    latent = (max(1, resolution[1] // down), max(1, resolution[0] // down))
    try:
        probe = time_slice(meta.unet.config, batch=batch, latent_hw=latent, tokens=tokens, dtype=dtype,
                           device=device_type)
    except Exception as exc:  # noqa: BLE001 - out of memory, a device that is not there: fall back to the table
        notes.append(f"the UNet slice could not be timed on {device_type} ({str(exc).splitlines()[0][:120]}); "
                     "using a typical rate")
        return None
    return probe.forward_flops * (1 + BACKWARD_FACTOR) / probe.seconds


def _round(x: float) -> float:
    """Three significant digits: enough for a rough figure, and never 0.0 for a small one."""
    return float(f"{x:.3g}")


def family_table_estimate(plan, cfg, family: str, device_type: str, mixed: str | None = None) -> dict:
    """Typical figures per family, for when the model's configs cannot be read."""
    unet_p, te_p = FAMILY_PARAMS.get(family, FAMILY_PARAMS["sd1"])
    half = _half(cfg, device_type, mixed)
    weights = (unet_p + te_p) * (2 if half else 4)
    px = plan.resolution[0] * plan.resolution[1]
    act_per_img = (3.0e9 if family == "sdxl" else 1.6e9) * px / (1024 * 1024 if family == "sdxl" else 512 * 512)
    if cfg.gradient_checkpointing:
        act_per_img /= 4
    mem = weights + act_per_img * plan.batch_size
    step_s = {"cuda": 0.25 if family != "sdxl" else 0.8, "cpu": 30.0, "mps": 3.0}.get(device_type, 1.0)
    step_s *= plan.batch_size * cfg.grad_accum * px / (512 * 512 if family != "sdxl" else 1024 * 1024)
    return {"basis": "family table", "source": "", "family": family,
            "params": {"unet": int(unet_p), "text_encoders": [int(te_p)], "vae": None, "trainable": None},
            "memory_gb": round(mem / 2**30, 1), "memory_bytes": int(mem), "seconds_per_step": round(step_s, 2),
            "total_minutes": round(step_s * plan.max_steps / 60, 1), "notes": []}


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.{3 if unit == 'B' else 1}f} {unit}"
    return str(n)


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GB" if nbytes >= 0.1 * 2**30 else f"{nbytes / 2**20:.1f} MB"


def _flops(n: float) -> str:
    return f"{n / 1e12:.2f} TFLOP" if n >= 1e10 else f"{n / 1e9:.3f} GFLOP"


def describe(est: dict) -> list[str]:
    """Lines for the dry-run printout after the one-line summary: parameters, memory parts, notes."""
    lines = []
    p = est.get("params") or {}
    if est.get("basis") == "model configs":
        tes = " + ".join(_count(n) for n in p.get("text_encoders", [])) or "none"
        lines.append(f"parameters ({est.get('source')}): UNet {_count(p.get('unet'))}, text encoder(s) {tes}, "
                     f"VAE {_count(p.get('vae'))}; trained {_count(p.get('trainable'))}")
        parts = est.get("memory_parts_bytes", {})
        lines.append("memory: " + ", ".join(f"{k.replace('_', ' ')} {_size(v)}" for k, v in parts.items() if v)
                     + f"; {_flops(est.get('step_flops', 0))} per step"
                     + ("" if est.get("text_encoder_cached") else "; text encoder(s) on the device"))
    for note in est.get("notes", []):
        lines.append(f"note: {note}")
    return lines
