"""The training loop, top to bottom: dataset -> plan -> base model -> network -> caches -> steps -> files.

Determinism: every random draw of optimizer step s, micro-batch m, process r comes from a
generator seeded by (seed, m, r), and each epoch's batch order from (seed, epoch). So a resumed run
draws exactly what the uninterrupted run would have, and nothing depends on worker timing.

Several processes (`accelerate launch`): each takes its share of every step's batches; gradients
are averaged with one all-reduce before the optimizer step, so all processes hold identical weights.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from datakit.errors import StageError, UsageError
from datakit.train import data as D
from datakit.train.config import TrainConfig

CHECKPOINTS = "checkpoints"
DEFAULT_MAX_STEPS = 1600  # kohya's default when neither --max-steps nor --epochs is given


@dataclass
class Plan:
    """What a run will do; printed by --dry-run and stored in datakit.json."""

    resolution: tuple[int, int]
    batch_size: int
    world_size: int
    grad_accum: int
    num_train_images: int
    num_reg_images: int
    samples_per_epoch: int
    micro_per_epoch: int
    steps_per_epoch: int
    epochs: int
    max_steps: int
    enable_bucket: bool
    buckets: dict
    keep_tokens: int
    shuffle_caption: bool
    caption_dropout_rate: float
    caption_tag_dropout_rate: float
    flip_aug: bool
    alpha_mask: bool
    subsets: list = field(default_factory=list)


def make_plan(cfg: TrainConfig, spec: D.DatasetSpec, entries: list[D.Entry], world_size: int) -> Plan:
    """Steps and epochs (kohya's arithmetic: epoch = sum of repeats x images, in batches)."""
    bs = spec.batch_size
    batches = D.batches_per_epoch(entries, spec, bs)
    micro = max(1, math.ceil(batches / world_size))
    per_epoch = max(1, math.ceil(micro / cfg.grad_accum))
    if cfg.max_steps:
        max_steps = cfg.max_steps
        epochs = math.ceil(max_steps / per_epoch)
    elif cfg.epochs:
        epochs = cfg.epochs
        max_steps = epochs * per_epoch
    elif spec.plan_epochs:
        epochs = spec.plan_epochs  # emit's plan, unless --max-steps / --epochs say otherwise
        max_steps = epochs * per_epoch
    else:
        max_steps = DEFAULT_MAX_STEPS
        epochs = math.ceil(max_steps / per_epoch)
    buckets = D.assign_buckets(entries, spec) if entries else {}
    subs = spec.subsets
    return Plan(
        resolution=spec.resolution, batch_size=bs, world_size=world_size, grad_accum=cfg.grad_accum,
        num_train_images=sum(1 for e in entries if not subs[e.subset].is_reg),
        num_reg_images=sum(1 for e in entries if subs[e.subset].is_reg),
        samples_per_epoch=sum(subs[e.subset].num_repeats for e in entries),
        micro_per_epoch=micro, steps_per_epoch=per_epoch, epochs=epochs, max_steps=max_steps,
        enable_bucket=spec.enable_bucket, buckets={f"{w}x{h}": n for (w, h), n in sorted(buckets.items())},
        keep_tokens=max((s.keep_tokens for s in subs), default=0),
        shuffle_caption=any(s.shuffle_caption for s in subs),
        caption_dropout_rate=max((s.caption_dropout_rate for s in subs), default=0.0),
        caption_tag_dropout_rate=max((s.caption_tag_dropout_rate for s in subs), default=0.0),
        flip_aug=any(s.flip_aug for s in subs), alpha_mask=any(s.alpha_mask for s in subs),
        subsets=[{"dir": str(s.image_dir), "repeats": s.num_repeats, "is_reg": s.is_reg,
                  "images": sum(1 for e in entries if e.subset == i)} for i, s in enumerate(subs)],
    )


def estimate(plan: Plan, cfg: TrainConfig, family: str, device_type: str, mixed: str | None = None) -> dict:
    """Rough memory and time estimate from the base model's configs (datakit.train.estimate), no weights loaded."""
    from datakit.train.estimate import estimate as model_based

    return model_based(plan, cfg, family, device_type, mixed)


def family_guess(model: str, cfg: TrainConfig) -> str:
    """Family without loading weights (dry-run): the flag, else the UNet config in a diffusers folder."""
    if cfg.family:
        return cfg.family
    unet_cfg = Path(model) / "unet" / "config.json"
    if unet_cfg.is_file():
        c = json.loads(unet_cfg.read_text())
        if c.get("addition_embed_type") == "text_time":
            return "sdxl"
        return "sd2" if c.get("cross_attention_dim") == 1024 else "sd1"
    return "sdxl" if "xl" in str(model).lower() else "sd1"


# ---- the run ---------------------------------------------------------------------------------

def _mixed_precision(cfg: TrainConfig, device_type: str) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _device_type(cfg: TrainConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def _step_generator(seed: int, micro: int, rank: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(np.random.SeedSequence([seed, micro, rank]).generate_state(1)[0]))


def _list_checkpoints(out: Path) -> list[Path]:
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    from datakit.train.checkpoint import has_training_state

    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and has_training_state(p))


def finish_outputs(log: "LossLog", out: Path, outputs: list[str]) -> None:
    """Flush the loss log and add the loss plot to the outputs (main process only)."""
    log.flush()
    plot = log.plot(out / "loss.png")
    if plot:
        outputs.append(str(plot))


def run_summary(method, out, outputs, cfg, plan: dict, base, overrides, spec, entries, skipped, fingerprint, step,
                store, text_cache, loss_window, t0, train_s, trigger, keep_tokens, reporter, **extra) -> dict:
    """The datakit.json of a training run: what every method records, plus its own `extra` fields."""
    info = {
        "stage": "train",
        "method": method,
        "output": str(out),
        "file": outputs[0] if outputs else None,
        "outputs": outputs,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "plan": plan,
        "base_model": {"name": base.name, "family": base.family, "prediction_type": base.prediction_type},
        "overrides": overrides,
        "notes": spec.notes + base.notes,
        "counts": {"in": len(entries) + len(skipped), "out": len(outputs[:1]), "skipped": len(skipped), "failed": 0},
        "skipped": skipped,
        "fingerprint": fingerprint,
        "steps": step,
        "cache": {"latents_reused": store.reused, "latents_encoded": store.encoded, "text": text_cache is not None},
        "final_loss": round(float(np.mean(loss_window)), 6) if loss_window else None,
        "timings": {"total_s": round(time.perf_counter() - t0, 3), "train_s": round(train_s, 3)},
        "carry": {k: v for k, v in {"trigger": trigger, "keep_tokens": keep_tokens or None}.items() if v is not None},
        "warnings": list(reporter.warnings),
    }
    info.update(extra)
    return info


def prepare_output(out: Path) -> None:
    """Create the output folder, or one clear usage error when it cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"the output folder is not writable: {out}")


def run_fingerprint(cfg: TrainConfig, spec: D.DatasetSpec, entries: list[D.Entry]) -> str:
    """Config (minus what cannot change the result) + every image and caption byte: same -> nothing to do."""
    from datakit.manifest import hash_file, hash_json

    conf = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
            if k not in ("device", "dry_run", "resume", "cache_dir")}
    files = []
    for e in entries:
        files.append(hash_file(e.path))
        for ext in (".txt", ".caption"):
            cap = e.path.with_suffix(ext)
            if cap.is_file():
                files.append(hash_file(cap))
    return hash_json({"config": conf, "files": files, "subsets": [str(asdict(s)) for s in spec.subsets]})


def run_train(cfg: TrainConfig, reporter, *, force: bool = False, base=None) -> dict:
    """`datakit train --method lora`: returns the datakit.json info.

    base: an already loaded BaseModel (benchmarks, notebooks); default: load --base-model.
    """
    if cfg.method == "hypernetwork":  # the same data, plan and feedback around an A1111 hypernetwork
        from datakit.train.hypernetwork_train import run_hypernetwork

        return run_hypernetwork(cfg, reporter, force=force)
    started = time.time()
    t0 = time.perf_counter()
    spec = D.read_dataset(cfg.dataset)
    spec, overrides = D.with_overrides(spec, cfg)
    entries, skipped = D.collect_entries(spec)
    if not entries:
        raise UsageError(f"{cfg.dataset}: the dataset has no usable images")
    device_type = _device_type(cfg)
    if device_type == "cuda" and not torch.cuda.is_available():
        reporter.warn("--device cuda asked for but no CUDA GPU is available; using the CPU")
        device_type = "cpu"

    from accelerate import Accelerator

    mixed = _mixed_precision(cfg, device_type)
    if mixed == "fp16" and device_type == "cpu":
        reporter.warn("fp16 mixed precision is not supported on the CPU; using bf16")
        mixed = "bf16"
    from accelerate.state import AcceleratorState

    # accelerate keeps one global state per process; a second run in the same process (tests, notebooks)
    # may ask for another precision. The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=mixed, cpu=device_type == "cpu")
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if not main:
        reporter.quiet = True
    plan = make_plan(cfg, spec, entries, world)
    trigger = spec.trigger
    output_name = cfg.output_name or (trigger.replace(" ", "_") if trigger else "lora")

    for note in spec.notes:
        reporter.info(f"note: {note}")
    for change in overrides:
        reporter.info(f"override: {change}")
    reporter.info(f"dataset: {plan.num_train_images} images (+{plan.num_reg_images} reg) in {len(spec.subsets)} subsets, "
                  f"{plan.samples_per_epoch} samples/epoch, buckets {plan.buckets}")
    reporter.info(f"plan: {plan.max_steps} steps = {plan.epochs} epochs x {plan.steps_per_epoch} steps, batch {plan.batch_size}"
                  f" x {world} process(es) x {cfg.grad_accum} accumulation")
    if cfg.dry_run:
        fam = family_guess(cfg.base_model, cfg)
        est = estimate(plan, cfg, fam, device_type, mixed)
        fam = est.get("family", fam)
        reporter.info(f"estimate ({fam}, {device_type}, {mixed}): ~{est['memory_gb']} GB, ~{est['seconds_per_step']} s/step, "
                      f"~{est['total_minutes']} min in all (rough)")
        from datakit.train.estimate import describe

        for line in describe(est):
            reporter.info(line)
        return {"stage": "train", "dry_run": True, "plan": asdict(plan), "estimate": est, "overrides": overrides,
                "notes": spec.notes, "counts": {"in": len(entries) + len(skipped), "out": 0, "skipped": len(skipped)},
                "skipped": skipped, "output_name": output_name}

    out = Path(cfg.output)
    fingerprint = run_fingerprint(cfg, spec, entries)
    from datakit.manifest import read_stage_info

    previous = read_stage_info(out) if out.is_dir() else None
    if (not force and previous and previous.get("fingerprint") == fingerprint and previous.get("file")
            and Path(previous["file"]).exists()):
        reporter.info(f"train: nothing to do, {previous['file']} is up to date (--force retrains)")
        return dict(previous, nothing_to_do=True)
    prepare_output(out)
    device = accelerator.device

    # -- base model, frozen ----------------------------------------------------------------
    from datakit.train.model import encode_prompts, load_base_model, make_noise_scheduler, sdxl_time_ids

    if base is None:
        base = load_base_model(cfg.base_model, family=cfg.family, config_dir=cfg.config_dir,
                               prediction_type=cfg.prediction_type)
    for note in base.notes:
        reporter.info(f"note: {note}")
    _check_sizes(entries, base)
    reporter.info(f"base model: {base.name} ({base.family}, {base.prediction_type}); device {device} ({mixed} precision)")
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    for m in [base.unet, base.vae, *base.text_encoders]:
        m.requires_grad_(False)
        m.eval()
    _place(base.vae, device, torch.float32)  # fp32 VAE: SDXL's VAE overflows in fp16; it runs once per image anyway
    _place(base.unet, device, weight_dtype)
    for te in base.text_encoders:
        _place(te, device, weight_dtype)
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0

        base.unet.set_attn_processor(AttnProcessor2_0())  # SDPA
    except Exception:  # noqa: BLE001 - newer diffusers use SDPA by default
        pass
    if cfg.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            for te in base.text_encoders:  # non-reentrant: the frozen embeddings need no grad for LoRA grads to flow
                if hasattr(te, "activation_checkpointing_enable"):  # transformers >= 5.x
                    te.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    noise_scheduler = make_noise_scheduler(base, zero_terminal_snr=cfg.zero_terminal_snr)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)

    # -- network (pluggable) ---------------------------------------------------------------
    torch.manual_seed(cfg.seed)  # the LoRA down-weights' random init
    network = make_network(cfg)
    network.apply_to(base)
    if cfg.network_weights:
        network.load(cfg.network_weights)
        reporter.info(f"started from {cfg.network_weights}")
    network.to(device, torch.float32)  # trainable weights stay fp32 whatever the mixed precision
    network.train()
    reporter.info(f"network: LoRA rank {network.rank}, alpha {network.alpha}: {len(network.unet_loras)} UNet"
                  f" + {len(network.te_loras)} text-encoder modules, "
                  f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters")

    # -- caches ----------------------------------------------------------------------------
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    with reporter.progress(len(entries), "latents") as bar:
        store = _build_latents_all_ranks(accelerator, entries, spec, base, cfg, cache_dir, device, bar, skipped, force)
    if store.bad:
        keep = [i for i in range(len(entries)) if i not in store.bad]
        remap = {old: new for new, old in enumerate(keep)}
        entries = [entries[i] for i in keep]
        store.latents = {remap[i]: v for i, v in store.latents.items() if i in remap}
        store.flipped = {remap[i]: v for i, v in store.flipped.items() if i in remap}
        store.masks = {remap[i]: v for i, v in store.masks.items() if i in remap}
        if not entries:
            raise StageError("no image of the dataset could be read")
        plan = make_plan(cfg, spec, entries, world)
    reporter.info(f"latent cache: {store.reused} reused, {store.encoded} encoded ({cfg.latent_cache})")
    base.vae.to("cpu")  # not needed until samples
    if device_type == "cuda":
        torch.cuda.empty_cache()

    def encode(captions):
        return encode_prompts(base, captions, clip_skip=cfg.clip_skip, max_token_length=cfg.max_token_length, device=device)

    text_cache = None
    if not network.trains_text_encoder and D.captions_are_fixed(spec.subsets):
        from datakit.train.cache import TextCache

        text_cache = TextCache()
        with accelerator.autocast():
            text_cache.fill([e.caption for e in entries] + [""], encode)
        for te in base.text_encoders:  # frozen and cached: its memory goes back
            te.to("cpu")
        reporter.info(f"text-encoder outputs cached for {len(text_cache.hidden)} captions")

    # -- optimizer, schedule, resume -------------------------------------------------------
    from datakit.train.optim import clip_gradients, make_optimizer, make_scheduler

    unet_lr = cfg.unet_lr if cfg.unet_lr is not None else cfg.lr
    te_lr = cfg.text_encoder_lr if cfg.text_encoder_lr is not None else cfg.lr
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.optimizer, network.param_groups(unet_lr, te_lr), cfg, device_type=device_type)
    lr_scheduler = make_scheduler(optimizer, cfg, plan.max_steps)
    optimizer = accelerator.prepare(optimizer)  # fp16: loss scaling; the network itself is not wrapped (see top)

    step = 0
    resumed_from = None
    ckpts = _list_checkpoints(out)
    if cfg.resume and not force:
        path = ckpts[-1] if cfg.resume == "auto" and ckpts else (Path(cfg.resume) if cfg.resume != "auto" else None)
        if path is not None:
            step = _load_checkpoint(path, network, optimizer, lr_scheduler, accelerator)
            resumed_from = str(path)
            reporter.info(f"resumed from {path} at step {step}")
        else:
            reporter.info("--resume auto: no checkpoint yet, starting fresh")

    # -- the loop ----------------------------------------------------------------------------
    log = LossLog(out / "loss.csv", keep_until=step if resumed_from else 0, enabled=main)
    prompts = None
    if cfg.sample_every and main:
        from datakit.train.samples import read_prompts

        prompts = read_prompts(cfg.sample_prompts, trigger)
    batch_cache: dict[int, list[list[int]]] = {}
    micro = step * cfg.grad_accum
    is_reg = torch.tensor([spec.subsets[e.subset].is_reg for e in entries])
    last_good = str(ckpts[-1]) if ckpts else None
    loss_window: list[float] = []
    t_loop = time.perf_counter()
    steps_done = 0
    step_ends: list[float] = []
    with TrainProgress(reporter, plan.max_steps, step, device_type) as progress:
        while step < plan.max_steps:
            accum_loss = 0.0
            for _ in range(cfg.grad_accum):
                epoch = micro // plan.micro_per_epoch
                if epoch not in batch_cache:
                    batch_cache.clear()
                    batch_cache[epoch] = D.epoch_batches(entries, spec, plan.batch_size, cfg.seed, epoch)
                batches = batch_cache[epoch]
                pos = (micro % plan.micro_per_epoch) * world + rank
                idx = batches[pos % len(batches)]
                gen = _step_generator(cfg.seed, micro, rank)
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # LoRA dropout draws
                loss = _micro_step(cfg, spec, base, network, store, text_cache, encode, entries, idx, gen, device,
                                   accelerator, noise_scheduler, alphas_cumprod, is_reg, sdxl_time_ids, epoch)
                value = float(loss.detach())
                if not math.isfinite(value) or value > cfg.nan_loss_limit:
                    _diverged(value, step, last_good, cfg)
                accelerator.backward(loss / cfg.grad_accum)
                accum_loss += value / cfg.grad_accum
                micro += 1
            if world > 1:
                _average_gradients(params, world)
            if cfg.max_grad_norm:
                if accelerator.scaler is not None:
                    accelerator.unscale_gradients()
                norm = clip_gradients(params, cfg)
                # fp16's loss scaler skips steps with inf gradients by itself; otherwise they would poison the weights.
                if norm is not None and not math.isfinite(norm) and accelerator.scaler is None:
                    _diverged(norm, step, last_good, cfg)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_done += 1
            step_ends.append(time.perf_counter())
            lr = lr_scheduler.get_last_lr()[0]
            loss_window = (loss_window + [accum_loss])[-20:]
            log.add(step, micro // plan.micro_per_epoch, accum_loss, lr)
            progress.update(step, accum_loss, lr)
            is_save = bool(cfg.save_every and step % cfg.save_every == 0 and step < plan.max_steps)
            if is_save:
                accelerator.wait_for_everyone()
                if main:
                    last_good = str(_save_checkpoint(out, step, network, optimizer, lr_scheduler, accelerator, cfg, base,
                                                     plan, started, trigger, spec, entries, output_name))
                    log.flush()
            if prompts and (step % cfg.sample_every == 0 or step == plan.max_steps):
                _samples(base, network, prompts, cfg, plan, device, accelerator, out / "samples" / f"step-{step:06d}.png")
    train_s = time.perf_counter() - t_loop

    # -- outputs -----------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    distributed = None
    if world > 1:
        distributed = {"processes": world, "weights_identical": _weights_agree(network)}
        if not distributed["weights_identical"]:
            raise StageError("the training processes ended with different weights (a datakit bug; please report it)")
    outputs = []
    if main:
        from datakit.train.formats import build_metadata, kohya_bucket_info, save_diffusers, save_dtype

        meta = build_metadata(cfg=cfg, base=base, plan=plan, network=network, optimizer=optimizer, step=step,
                              epoch=math.ceil(micro / plan.micro_per_epoch), started=started, trigger=trigger,
                              tag_frequency=D.tag_frequency(spec, entries), dataset_dirs=D.dataset_dirs(spec, entries),
                              bucket_info=kohya_bucket_info(spec, entries) if plan.enable_bucket else None)
        meta["ss_output_name"] = output_name
        if cfg.format == "diffusers":
            dest = save_diffusers(network, base, out / output_name, save_dtype(cfg.save_precision))
        else:
            dest = out / f"{output_name}.safetensors"
            network.save(dest, meta, save_dtype(cfg.save_precision))
        outputs.append(str(dest))
        finish_outputs(log, out, outputs)
    info = run_summary(
        "lora", out, outputs, cfg, asdict(plan), base, overrides, spec, entries, skipped, fingerprint, step,
        store, text_cache, loss_window, t0, train_s, trigger, plan.keep_tokens, reporter,
        distributed=distributed, resumed_from=resumed_from, speed=_speed(steps_done, train_s, step_ends, device_type),
    )
    if main:
        from datakit.manifest import write_stage_info

        write_stage_info(out, info)
    accelerator.end_training() if hasattr(accelerator, "end_training") else None
    return info


def _check_sizes(entries, base) -> None:
    """Every bucket must divide down through the VAE and the UNet's downsamplers (64 px for SD)."""
    unit = base.vae_downscale * 2 ** (len(base.unet.config.block_out_channels) - 1)
    bad = sorted({e.bucket for e in entries if e.bucket[0] % unit or e.bucket[1] % unit})
    if bad:
        w, h = bad[0]
        raise UsageError(f"training size {w}x{h} is not a multiple of {unit} px, which this model needs; "
                         f"use a --resolution that is (e.g. {max(unit, w // unit * unit)})")


def _place(module, device, dtype) -> None:
    """Move a frozen model; cast only when its dtype differs."""
    if next(module.parameters()).dtype != dtype:
        module.to(dtype=dtype)
    module.to(device)


def make_network(cfg: TrainConfig):
    """The network for --method (LoRA here; other methods plug in through datakit.train.network)."""
    from datakit.train.lora import LoRANetwork

    return LoRANetwork(rank=cfg.rank, alpha=cfg.alpha, conv_rank=cfg.conv_rank, conv_alpha=cfg.conv_alpha,
                       dropout=cfg.dropout, rank_dropout=cfg.rank_dropout, module_dropout=cfg.module_dropout,
                       train_text_encoder=cfg.train_text_encoder)


def _build_latents_all_ranks(accelerator, entries, spec, base, cfg, cache_dir, device, bar, skipped, force):
    """The main process encodes and writes the disk cache first; the others then read it."""
    from datakit.train.cache import build_latents

    folder = cache_dir / "latents"
    if cfg.latent_cache == "disk" and accelerator.num_processes > 1:
        if accelerator.is_main_process:
            build_latents(entries, spec, base, mode="disk", folder=folder, device=device, reuse=not force)
        accelerator.wait_for_everyone()
        force = False  # the main process has just rewritten the cache
    return build_latents(entries, spec, base, mode=cfg.latent_cache if cfg.latent_cache != "none" else "ram",
                         folder=folder, device=device, progress=bar, skipped=skipped, reuse=not force)


def _micro_step(cfg, spec, base, network, store, text_cache, encode, entries, idx, gen, device, accelerator,
                noise_scheduler, alphas_cumprod, is_reg, sdxl_time_ids, epoch):
    """One forward pass on one micro-batch; returns the (weighted) loss."""
    flips = [bool(spec.subsets[entries[i].subset].flip_aug and torch.rand((), generator=gen) < 0.5) for i in idx]
    pairs = [store.get(i, f) for i, f in zip(idx, flips)]
    latents = torch.stack([p[0] for p in pairs]).to(device)
    masks = None
    if any(p[1] is not None for p in pairs):
        masks = torch.stack([p[1] if p[1] is not None else torch.ones_like(pairs[0][1]) for p in pairs]).to(device)
    rngs = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    captions = [D.process_caption(entries[i].caption, spec.subsets[entries[i].subset], rngs) for i in idx]
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=gen).to(device)
    if cfg.noise_offset:
        noise = noise + cfg.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    with accelerator.autocast():
        if text_cache is not None:
            hidden, pooled = text_cache.get(captions)
        else:
            with torch.set_grad_enabled(network.trains_text_encoder):
                hidden, pooled = encode(captions)
        kwargs = {}
        if base.family == "sdxl":
            size = (latents.shape[-1] * base.vae_downscale, latents.shape[-2] * base.vae_downscale)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(device),
                                           "time_ids": sdxl_time_ids(size, b, device, hidden.dtype)}
        pred = base.unet(noisy, timesteps, hidden.to(device), **kwargs).sample
    if base.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
    if masks is not None:
        loss = loss * masks.unsqueeze(1)  # masked loss: transparent pixels teach nothing (kohya: alpha_mask)
    loss = loss.mean(dim=[1, 2, 3])
    reg = is_reg[idx].to(device)
    if cfg.prior_loss_weight != 1.0 and reg.any():
        loss = loss * torch.where(reg, torch.tensor(cfg.prior_loss_weight, device=device), torch.tensor(1.0, device=device))
    if cfg.min_snr_gamma:
        snr = alphas_cumprod[timesteps] / (1 - alphas_cumprod[timesteps])
        gamma = torch.full_like(snr, cfg.min_snr_gamma)
        weight = torch.minimum(snr, gamma) / (snr + 1 if base.prediction_type == "v_prediction" else snr)
        loss = loss * weight
    return loss.mean()


def _average_gradients(params, world: int) -> None:
    """One all-reduce of every gradient, flattened, so every process applies the same update."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _speed(steps: int, seconds: float, ends: list[float], device_type: str) -> dict:
    """Overall steps/s, and steps/s after the first 3 steps (warm-up: allocator, kernels, caches)."""
    out = {"steps_per_s": round(steps / seconds, 4) if seconds > 0 else None}
    if len(ends) > 4:
        out["steady_steps_per_s"] = round((len(ends) - 3) / (ends[-1] - ends[2]), 4)
    if device_type == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _weights_agree(network) -> bool:
    """All processes hold bit-identical LoRA weights (checked once, at the end)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).double() for p in network.parameters()])
    mine = torch.stack([flat.sum(), flat.abs().sum(), (flat * torch.arange(len(flat), dtype=flat.dtype, device=flat.device)).sum()])
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _diverged(value: float, step: int, last_good: str | None, cfg: TrainConfig):
    keep = f"the last good checkpoint is kept: {last_good}" if last_good else "no checkpoint was written yet (use --save-every)"
    raise StageError(f"training diverged at step {step + 1} (loss {value}); {keep}. Try a lower --lr (now {cfg.lr}), "
                     "--mixed-precision bf16 instead of fp16, or --max-grad-norm 1.0")


def _samples(base, network, prompts, cfg, plan, device, accelerator, dest: Path):
    from datakit.train.samples import generate_grid

    network.eval()
    try:
        tes_device = [next(te.parameters()).device for te in base.text_encoders]
        for te in base.text_encoders:
            te.to(device)
        generate_grid(base, prompts, size=plan.resolution, steps=cfg.sample_steps, cfg_scale=cfg.sample_cfg,
                      device=device, autocast=accelerator.autocast, dest=dest)
        for te, d in zip(base.text_encoders, tes_device):
            te.to(d)
    finally:
        network.train()


# ---- checkpoints ------------------------------------------------------------------------------

def _save_checkpoint(out: Path, step: int, network, optimizer, lr_scheduler, accelerator, cfg, base, plan, started,
                     trigger, spec, entries, output_name) -> Path:
    """checkpoints/step-NNNNNN/: the LoRA file (usable as is) + the training state (datakit.train.checkpoint)."""
    from datakit.train.checkpoint import atomic_folder, capture_training_state, save_training_state
    from datakit.train.formats import build_metadata, kohya_bucket_info, save_dtype

    folder = out / CHECKPOINTS / f"step-{step:06d}"
    meta = build_metadata(cfg=cfg, base=base, plan=plan, network=network, optimizer=optimizer, step=step,
                          epoch=step // plan.steps_per_epoch, started=started, trigger=trigger,
                          tag_frequency=D.tag_frequency(spec, entries), dataset_dirs=D.dataset_dirs(spec, entries),
                          bucket_info=kohya_bucket_info(spec, entries) if plan.enable_bucket else None)
    with atomic_folder(folder) as tmp:  # a checkpoint folder exists only when complete
        network.save(tmp / f"{output_name}-step{step:06d}.safetensors", meta, save_dtype(cfg.save_precision))
        save_training_state(tmp, capture_training_state(step, network, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                                        scaler=accelerator.scaler, settings={"seed": cfg.seed}))
    if cfg.keep_last:
        for old in _list_checkpoints(out)[:-cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def _load_checkpoint(path: Path, network, optimizer, lr_scheduler, accelerator) -> int:
    from datakit.train.checkpoint import apply_training_state, load_training_state

    state = load_training_state(path, what="--resume")
    step = apply_training_state(state, network=network, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                scaler=accelerator.scaler, source=str(path), what="--resume")
    for m in network.modules_list() if hasattr(network, "modules_list") else []:
        m.scale = float(m.alpha) / m.rank
    return step


# ---- feedback ---------------------------------------------------------------------------------

class LossLog:
    """loss.csv (step, epoch, loss, lr) and a loss plot; a resumed run keeps the rows up to its step."""

    def __init__(self, path: Path, *, keep_until: int, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.rows: list[tuple] = []
        if enabled and keep_until and path.is_file():
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    if int(row["step"]) <= keep_until:
                        self.rows.append((int(row["step"]), int(row["epoch"]), float(row["loss"]), float(row["lr"])))
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - TensorBoard is optional
                self.tb = None

    def add(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        self.rows.append((step, epoch, loss, lr))
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)
            self.tb.add_scalar("lr", lr, step)

    def flush(self) -> None:
        if not self.enabled:
            return
        from datakit.imageio import write_text_atomic

        lines = ["step,epoch,loss,lr"] + [f"{s},{e},{loss:.6f},{lr:.8g}" for s, e, loss, lr in self.rows]
        write_text_atomic(self.path, "\n".join(lines) + "\n")

    def plot(self, dest: Path) -> Path | None:
        if not self.enabled or not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = np.array([r[0] for r in self.rows])
        losses = np.array([r[2] for r in self.rows])
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
        if len(losses) >= 10:
            k = max(5, len(losses) // 20)
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        tmp = dest.with_name(f".{dest.name}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.replace(tmp, dest)
        return dest


class TrainProgress:
    """A rich progress bar with loss, LR, it/s, ETA and GPU memory (silent with --quiet/--json)."""

    def __init__(self, reporter, total: int, start: int, device_type: str):
        self.reporter, self.total, self.start, self.device_type = reporter, total, start, device_type
        self.progress = None

    def __enter__(self):
        if self.reporter.quiet or self.reporter.json_mode:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.reporter.err)
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total, completed=self.start, stats="")
        return self

    def update(self, step: int, loss: float, lr: float) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[self.task]
        speed = task.speed
        stats = f"loss {loss:.4f} lr {lr:.2e}"
        if speed:
            stats += f" {speed:.2f} it/s" if speed >= 1 else f" {1 / speed:.1f} s/it"
        if self.device_type == "cuda":
            stats += f" {torch.cuda.max_memory_allocated() / 2**30:.1f} GB"
        self.progress.update(self.task, completed=step, stats=stats)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False
