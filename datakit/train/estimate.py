"""The `--dry-run` estimate: memory and time per step from the actual base model, without its weights.

The configs the real loader would use are read (a diffusers folder's `unet/config.json` etc.; for a
single checkpoint the shipped `datakit/models/configs/<family>/` after detecting the family from the
safetensors header; a Hugging Face id from the local cache), the UNet, VAE and text encoder(s) are
built on the meta device (no memory, no weights), and one forward pass of the UNet on meta tensors
at the plan's resolution and batch size gives:

- the floating-point operations (torch's FlopCounterMode counts them from shapes alone), and
- the activations autograd keeps for the backward pass (every tensor it saves, seen through
  saved_tensors_hooks; attention as the memory-efficient SDPA kernels keep it, without the N x N
  matrix), plus what each checkpointed block (ResnetBlock2D, BasicTransformerBlock) holds. The
  activation peak is "everything saved + one block's worth of gradients in flight"; with gradient
  checkpointing it is "block inputs + the largest block recomputed + its gradients".

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
forward with gradient checkpointing; text encoders when not cached) divided by a rough effective
throughput per device kind, plus a fixed per-step overhead. Real speed varies by a factor of two or
more with the GPU model, drivers and attention kernels: it is meant to tell a 10-minute plan from a
10-hour one.

When the configs cannot be read, the estimate falls back to a per-family table, with a note.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

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
# The blocks diffusers' gradient checkpointing recomputes one at a time.
CHECKPOINT_UNITS = ("ResnetBlock2D", "BasicTransformerBlock")


@dataclass
class ModelConfigs:
    """Where a base model's component configs are, and its family."""

    family: str
    folder: Path  # diffusers layout: unet/config.json, vae/config.json, text_encoder/config.json ...
    source: str  # said to the user: which configs were read
    notes: list[str] = field(default_factory=list)


# ---- finding the configs the loader would use ----------------------------------------------------

def locate_configs(model: str, *, family: str | None = None, config_dir: Path | None = None) -> ModelConfigs:
    """The config folder for a diffusers folder, a single checkpoint or a cached Hugging Face id."""
    from datakit.errors import ModelNotFoundError
    from datakit.models import diffusion as dm

    path = Path(str(model)).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"{path} has no model_index.json")
        return ModelConfigs(family or dm.family_of_folder(path), path, f"configs of {path}")
    if path.is_file():
        notes = []
        if family is None and path.suffix.lower() == ".safetensors":
            family = dm.family_of_checkpoint(dm.checkpoint_keys(path))  # the header only, no tensors
        elif family is None:
            # A pickled .ckpt would have to be unpickled to see its keys: too slow for a dry run.
            family = "sdxl" if "xl" in path.name.lower() else "sd1"
            notes.append(f"family {family} guessed from the file name (give --family to be sure)")
        folder = dm.configs_for(family, Path(config_dir) if config_dir else None)
        return ModelConfigs(family, folder, f"{family} configs in {folder}", notes)
    if dm.looks_like_hub_id(str(model)):
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(str(model), "model_index.json")
        if isinstance(hit, str):
            folder = Path(hit).parent
            return ModelConfigs(family or dm.family_of_folder(folder), folder, f"configs of {model} (Hugging Face cache)")
        raise ModelNotFoundError(f"{model} is not in the Hugging Face cache")
    raise ModelNotFoundError(f"model not found: {model}")


# ---- the model on the meta device ---------------------------------------------------------------

@dataclass
class MetaModel:
    """The base model's modules on the meta device: shapes and structure, no weights."""

    family: str
    unet: object
    vae: object | None
    text_encoders: list


def _component_config(folder: Path, name: str, family: str) -> Path:
    own = folder / name / "config.json"
    if own.is_file():
        return own
    from datakit.models.diffusion import CONFIG_ROOT

    return CONFIG_ROOT / family / name / "config.json"


def build_meta_model(configs: ModelConfigs) -> MetaModel:
    """UNet, VAE and text encoder(s) from their configs, every parameter on the meta device."""
    import transformers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from datakit.models.diffusion import quiet_loading

    quiet_loading()
    fam, folder = configs.family, configs.folder
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(_component_config(folder, "unet", fam).parent)))
        vae_cfg = _component_config(folder, "vae", fam)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(vae_cfg.parent))) if vae_cfg.is_file() else None
        encoders = []
        names = ("text_encoder", "text_encoder_2") if fam == "sdxl" else ("text_encoder",)
        for i, name in enumerate(names):
            cfg_file = _component_config(folder, name, fam)
            if not cfg_file.is_file():
                continue
            default = "CLIPTextModelWithProjection" if i == 1 else "CLIPTextModel"
            cls_name = (index.get(name) or [None, default])[1] or default
            cls = getattr(transformers, cls_name, None) or getattr(transformers, default)
            te_cfg = transformers.CLIPTextConfig.from_pretrained(str(cfg_file.parent))
            encoders.append(cls(te_cfg))
    return MetaModel(fam, unet, vae, encoders)


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


# ---- what the run trains ------------------------------------------------------------------------

def lora_params(meta: MetaModel, cfg) -> int:
    """Parameters of the LoRA the trainer would build (the same target modules, kohya's shapes)."""
    from torch import nn

    from datakit.train.lora import text_encoder_prefixes, text_encoder_targets, unet_targets

    def size(mod, rank: int) -> int:
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            return rank * (mod.in_channels * k + mod.out_channels)
        return rank * (mod.in_features + mod.out_features)

    lora = cfg.lora
    total = 0
    for _, mod, is_3x3 in unet_targets(meta.unet, sdxl=meta.family == "sdxl", conv=bool(lora.conv_rank)):
        total += size(mod, lora.conv_rank if is_3x3 else lora.rank)
    if lora.train_text_encoder:
        for prefix, enc in zip(text_encoder_prefixes(len(meta.text_encoders)), meta.text_encoders):
            total += sum(size(mod, lora.rank) for _, mod, _ in text_encoder_targets(enc, prefix))
    return total


def trains_text_encoder(cfg) -> bool:
    """The run trains text-encoder modules (LoRA with --train-text-encoder)."""
    return cfg.lora is not None and cfg.lora.train_text_encoder


def hypernetwork_params(meta: MetaModel, cfg) -> int:
    """Parameters of the hypernetwork the trainer would build (its sizes and layer structure)."""
    from accelerate import init_empty_weights

    from datakit.train.hypernetwork import Hypernetwork, sizes_for
    from datakit.train.hypernetwork_config import hypernetwork_settings

    hs = hypernetwork_settings(cfg)
    sizes = hs.sizes or sizes_for(meta.unet, meta.family)
    with init_empty_weights():
        net = Hypernetwork(sizes, hs.layer_structure, hs.activation, layer_norm=hs.layer_norm,
                           dropout_structure=hs.dropout_structure, activate_output=hs.activate_output, init=False)
    return count_params(net)


def trainable_params(meta: MetaModel, cfg) -> int:
    return hypernetwork_params(meta, cfg) if cfg.method == "hypernetwork" else lora_params(meta, cfg)


# ---- one forward pass on meta tensors ------------------------------------------------------------

@dataclass
class Profile:
    """What one UNet forward at the plan's size costs."""

    forward_flops: int
    saved_bytes: int  # activation peak without checkpointing: everything saved + one block's gradients
    checkpointed_bytes: int  # with gradient checkpointing: block inputs + the largest block recomputed + its gradients


def profile_unet(meta: MetaModel, *, batch: int, resolution: tuple[int, int], dtype) -> Profile:
    """FLOPs and saved activations of a UNet forward that needs input gradients (LoRA/hypernetwork training)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = meta.unet.requires_grad_(False).to(dtype)
    ucfg = unet.config
    down = 2 ** (len(meta.vae.config.block_out_channels) - 1) if meta.vae is not None else 8
    w, h = resolution
    lw, lh = max(1, w // down), max(1, h // down)

    def empty(*shape):
        return torch.empty(*shape, device="meta", dtype=dtype)

    latents = empty(batch, int(ucfg.in_channels), lh, lw).requires_grad_(True)
    context = empty(batch, 77, int(ucfg.cross_attention_dim))
    kwargs = {}
    if ucfg.addition_embed_type == "text_time":
        pooled = int(ucfg.projection_class_embeddings_input_dim) - 6 * int(ucfg.addition_time_embed_dim)
        kwargs["added_cond_kwargs"] = {"text_embeds": empty(batch, pooled), "time_ids": empty(batch, 6)}

    frozen = {id(p) for p in unet.parameters()}
    saved: dict[int, tuple[object, int]] = {}  # keeps each base tensor alive, so ids stay unique
    total = [0]

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in frozen and id(base) not in saved:
            nbytes = base.numel() * base.element_size()
            saved[id(base)] = (base, nbytes)
            total[0] += nbytes
        return t

    units: list[tuple[int, int]] = []  # (input bytes, saved bytes) of each outermost checkpointed block
    open_units: list[tuple[int, int]] = []  # (saved total at entry, input bytes), innermost last

    def pre(mod, args):
        x = args[0] if args else None
        open_units.append((total[0], x.numel() * x.element_size() if torch.is_tensor(x) else 0))

    def post(mod, args, out):
        start, in_bytes = open_units.pop()
        if not open_units:  # nested blocks are part of their outer block
            units.append((in_bytes, total[0] - start))

    handles = []
    for mod in unet.modules():
        if type(mod).__name__ in CHECKPOINT_UNITS:
            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    counter = FlopCounterMode(display=False)
    functional = torch.nn.functional
    plain_sdpa = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _memory_efficient_sdpa(plain_sdpa)
    try:
        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            unet(latents, torch.zeros(batch, device="meta", dtype=torch.long), context, **kwargs)
    finally:
        functional.scaled_dot_product_attention = plain_sdpa
        for handle in handles:
            handle.remove()
    # Backward holds, next to what was saved, the gradients flowing through the block it is in: about
    # one block's saved size. With checkpointing that block is also recomputed first: twice that.
    largest = max((s for _, s in units), default=0)
    checkpointed = total[0] - sum(s for _, s in units) + sum(i for i, _ in units) + 2 * largest
    return Profile(int(counter.get_total_flops()), total[0] + largest, checkpointed)


def _memory_efficient_sdpa(plain):
    """SDPA as the GPU (and the CPU's flash kernel) runs it: no attention matrix kept for backward.

    On meta tensors torch picks the reference "math" path, which saves the full (heads, N, N)
    probabilities in fp32; counting those would overstate activations several times at 512 px.
    A call with a mask or other extras goes to the plain function.
    """
    import torch

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **extra):
        if attn_mask is not None or extra:
            return plain(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                         scale=scale, **extra)
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, None, True, dropout_p, is_causal, scale=scale)[0]

    return sdpa


def text_encoder_flops(meta: MetaModel, *, batch: int, tokens: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for enc in meta.text_encoders:
            enc(torch.zeros(batch, tokens, dtype=torch.long, device="meta"))
    return int(counter.get_total_flops())


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


def estimate(plan, cfg, family: str, device_type: str, mixed: str | None = None) -> dict:
    """Memory (GB) and time per step for this plan on this base model; the family table when configs fail."""
    from datakit.errors import DatakitError

    try:
        configs = locate_configs(cfg.base_model, family=cfg.family, config_dir=cfg.config_dir)
        meta = build_meta_model(configs)
    except (DatakitError, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        return _fallback(plan, cfg, family, device_type, mixed, "the base model's configs could not be read", exc)
    try:
        return model_estimate(plan, cfg, meta, device_type, mixed, source=configs.source, notes=configs.notes)
    except Exception as exc:  # an unusual architecture the meta pass cannot run must not stop a dry run
        return _fallback(plan, cfg, meta.family, device_type, mixed, "the model could not be profiled on the meta device", exc)


def _fallback(plan, cfg, family: str, device_type: str, mixed: str | None, why: str, exc: BaseException) -> dict:
    est = family_table_estimate(plan, cfg, family, device_type, mixed)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    est["notes"].append(f"{why} ({detail}); using typical {family} figures")
    return est


def model_estimate(plan, cfg, meta: MetaModel, device_type: str, mixed: str | None = None, *,
                   source: str = "", notes: list[str] | None = None) -> dict:
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
    prof = profile_unet(meta, batch=batch, resolution=tuple(plan.resolution), dtype=dtype)
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

    tokens = 77 * max(1, int(cfg.max_token_length) // 75)
    te_flops = 0 if cached_text else text_encoder_flops(meta, batch=batch, tokens=tokens)
    if trains_text_encoder(cfg):
        te_flops *= 1 + BACKWARD_FACTOR + 1  # its LoRA needs weight-side gradients too
    per_micro = prof.forward_flops * (1 + BACKWARD_FACTOR + (1 if cfg.gradient_checkpointing else 0)) + te_flops
    step_flops = per_micro * max(1, int(cfg.grad_accum))
    step_s = step_flops / throughput(device_type, half) + STEP_OVERHEAD_S.get(device_type, 0.1)
    if device_type == "cpu":
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
        "notes": notes,
    }


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
