"""`datakit train --method hypernetwork`: the LoRA trainer's loop, data and feedback, with an A1111 hypernetwork.

Shared with the LoRA trainer (datakit.train.trainer): the dataset reading and plan, the base-model
loading, the deterministic per-step generators, loss.csv / plot, progress bar and samples.
Specific here: the latent distribution cache (A1111's once / deterministic / random sampling),
prompt templates, the A1111 learning-rate and clip schedules, cosine restarts, and the A1111 .pt
files (also the checkpoints: OUTPUT/checkpoints/NAME-STEP.pt + .optim, which --resume reads).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from datakit.errors import StageError, UsageError
from datakit.train import data as D
from datakit.train import trainer as T
from datakit.train.config import TrainConfig

CHECKPOINTS = "checkpoints"


def _checkpoints(out: Path, name: str) -> list[Path]:
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob(f"{name}-*.pt"):
        tail = p.stem[len(name) + 1:]
        if tail.isdigit():
            found.append((int(tail), p))
    return [p for _, p in sorted(found)]


def _model_hash(model: str) -> tuple[str | None, str]:
    """A1111's sd_checkpoint (short sha256 of a checkpoint file) and sd_checkpoint_name."""
    from datakit.train.hypernetwork_format import shorthash

    path = Path(str(model)).expanduser()
    name = path.stem if path.is_file() else (path.name or str(model))
    return (shorthash(path) if path.is_file() else None), name


def resolve_resume(cfg: TrainConfig, out: Path, name: str) -> Path | None:
    """--resume FILE.pt (any A1111 hypernetwork) or 'auto' (the newest checkpoint in OUTPUT)."""
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        found = _checkpoints(out, name)
        return found[-1] if found else None
    path = Path(cfg.resume)
    if not path.is_file():
        raise UsageError(f"--resume: {path} is not a file; give an A1111 hypernetwork .pt or 'auto'")
    return path


def run_hypernetwork(cfg: TrainConfig, reporter, *, force: bool = False) -> dict:
    """Train an A1111 hypernetwork; returns the datakit.json info."""
    from datakit.train.hypernetwork_config import hypernetwork_settings
    from datakit.train.hypernetwork_data import fill_template, read_templates

    t0 = time.perf_counter()
    hs = hypernetwork_settings(cfg)
    templates = read_templates(cfg.template)
    spec = D.read_dataset(cfg.dataset)
    spec, overrides = D.with_overrides(spec, cfg)
    entries, skipped = D.collect_entries(spec)
    if not entries:
        raise UsageError(f"{cfg.dataset}: the dataset has no usable images")
    device_type = T._device_type(cfg)
    if device_type == "cuda" and not torch.cuda.is_available():
        reporter.warn("--device cuda asked for but no CUDA GPU is available; using the CPU")
        device_type = "cpu"

    from accelerate import Accelerator

    mixed = T._mixed_precision(cfg, device_type)
    if mixed == "fp16" and device_type == "cpu":
        reporter.warn("fp16 mixed precision is not supported on the CPU; using bf16")
        mixed = "bf16"
    accelerator = Accelerator(mixed_precision=mixed, cpu=device_type == "cpu")
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if not main:
        reporter.quiet = True
    plan = T.make_plan(cfg, spec, entries, world)
    trigger = spec.trigger
    name = cfg.output_name or (trigger.replace(" ", "_") if trigger else "hypernetwork")
    max_steps = plan.max_steps
    if hs.lr.end is not None and hs.lr.end < max_steps:
        reporter.info(f"note: the --lr schedule ends at step {hs.lr.end}; training stops there (as A1111)")
        max_steps = hs.lr.end
    if not hs.lr.is_constant and (cfg.lr_scheduler != "constant" or cfg.warmup_steps):
        reporter.info(f"note: the --lr schedule string {hs.lr.text!r} wins over --lr-scheduler {cfg.lr_scheduler}")
    if hs.cosine is not None and (cfg.lr_scheduler != "constant" or cfg.warmup_steps):
        reporter.info("note: cosine restarts (--cycle-steps) win over --lr-scheduler / --warmup-steps")

    for note in spec.notes:
        reporter.info(f"note: {note}")
    for change in overrides:
        reporter.info(f"override: {change}")
    reporter.info(f"dataset: {plan.num_train_images} images (+{plan.num_reg_images} reg) in {len(spec.subsets)} subsets, "
                  f"{plan.samples_per_epoch} samples/epoch, buckets {plan.buckets}")
    reporter.info(f"plan: {max_steps} steps, {plan.steps_per_epoch} steps/epoch, batch {plan.batch_size}"
                  f" x {world} process(es) x {cfg.grad_accum} accumulation; latent sampling {cfg.latent_sampling}")
    if cfg.dry_run:
        fam = T.family_guess(cfg.base_model, cfg)
        if fam == "sdxl":
            raise UsageError("hypernetworks for SDXL are not supported: A1111 and ComfyUI have no 2048-wide modules; "
                             "train a LoRA (--method lora) for SDXL")
        est = T.estimate(plan, cfg, fam, device_type, mixed)
        reporter.info(f"estimate ({fam}, {device_type}, {mixed}): ~{est['memory_gb']} GB, ~{est['seconds_per_step']} s/step "
                      "(rough; a hypernetwork trains at about LoRA's speed)")
        from datakit.train.estimate import describe

        for line in describe(est):
            reporter.info(line)
        return {"stage": "train", "method": "hypernetwork", "dry_run": True, "plan": asdict(plan), "estimate": est,
                "overrides": overrides, "notes": spec.notes, "output_name": name, "skipped": skipped,
                "counts": {"in": len(entries) + len(skipped), "out": 0, "skipped": len(skipped)}}

    out = Path(cfg.output)
    from datakit.manifest import hash_json, read_stage_info, write_stage_info

    # The template file's lines shape every prompt: an edited template is a changed run.
    fingerprint = hash_json({"run": T.run_fingerprint(cfg, spec, entries), "templates": templates})

    previous = read_stage_info(out) if out.is_dir() else None
    if (not force and previous and previous.get("fingerprint") == fingerprint and previous.get("file")
            and Path(previous["file"]).exists()):
        reporter.info(f"train: nothing to do, {previous['file']} is up to date (--force retrains)")
        return dict(previous, nothing_to_do=True)
    T.prepare_output(out)
    device = accelerator.device

    # -- base model, frozen ----------------------------------------------------------------------
    from datakit.train.model import encode_prompts, load_base_model, make_noise_scheduler

    base = load_base_model(cfg.base_model, family=cfg.family, config_dir=cfg.config_dir,
                           prediction_type=cfg.prediction_type, zero_terminal_snr=cfg.zero_terminal_snr)
    if base.family == "sdxl":
        raise UsageError(f"{base.name} is an SDXL model; hypernetworks for SDXL are not supported (A1111 and ComfyUI "
                         "have no 2048-wide modules); train a LoRA (--method lora) for SDXL")
    for note in base.notes:
        reporter.info(f"note: {note}")
    reporter.info(f"base model: {base.name} ({base.family}, {base.prediction_type}); device {device} ({mixed} precision)")
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)
    for m in [base.unet, base.vae, *base.text_encoders]:
        m.requires_grad_(False)
        m.eval()
    T._place(base.vae, device, torch.float32)
    T._place(base.unet, device, weight_dtype)
    for te in base.text_encoders:
        T._place(te, device, weight_dtype)
    use_sdpa(base.unet)
    if cfg.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
    noise_scheduler = make_noise_scheduler(base, zero_terminal_snr=cfg.zero_terminal_snr)
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)

    # -- the hypernetwork: new, or continued from an A1111 file ---------------------------------
    from datakit.train.hypernetwork import Hypernetwork, read_hypernetwork_file, sizes_for
    from datakit.train.hypernetwork_format import comfyui_differences, save_hypernetwork

    resume_path = None if force else resolve_resume(cfg, out, name)
    optimizer_state, step = None, 0
    if resume_path is not None:
        loaded = read_hypernetwork_file(resume_path, what="--resume")
        network = loaded["network"]
        step = loaded["meta"]["step"]
        optimizer_state = loaded["optimizer_state"]
        reporter.info(f"resumed from {resume_path} at step {step}; its structure and sizes are used as saved"
                      + ("" if optimizer_state else " (no matching .optim file: the optimizer starts fresh)"))
    else:
        if cfg.resume == "auto":
            reporter.info("--resume auto: no checkpoint yet, starting fresh")
        sizes = hs.sizes or sizes_for(base, base.family)
        torch.manual_seed(cfg.seed)  # weight init
        network = Hypernetwork(sizes, hs.layer_structure, hs.activation, layer_norm=hs.layer_norm,
                               dropout_structure=hs.dropout_structure, activate_output=hs.activate_output,
                               weight_init=hs.weight_init)
    network.apply_to(base)
    unused = [s for s in network.sizes if s not in network.hooked]
    if not network.hooked:
        raise UsageError(f"none of the hypernetwork sizes {network.sizes} matches an attention width of {base.name} "
                         f"(it has {sizes_for(base, base.family)})")
    if unused:
        reporter.info(f"note: sizes {unused} match no attention layer of {base.name}; they are saved but never used")
    network.set_multiplier(cfg.strength)  # used by samples only: training runs at strength 1 (as A1111)
    network.to(device, torch.float32)
    network.train()
    reporter.info(f"network: {network.describe()}; {sum(network.hooked.values())} attention layers, "
                  f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters")
    differences = comfyui_differences(network.activation, network.layer_norm, network.activate_output,
                                      network.dropout_structure)
    if differences:
        reporter.warn("ComfyUI will compute this hypernetwork differently from A1111 (the file loads in both): "
                      + "; ".join(differences) + ". docs/hypernetwork.md lists the portable settings")
    if step >= max_steps:
        raise UsageError(f"--resume: {resume_path} is already at step {step}, not below the {max_steps} steps planned; "
                         "give a larger --max-steps")

    # -- caches ------------------------------------------------------------------------------------
    from datakit.train.hypernetwork_data import build_latent_dists

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    with reporter.progress(len(entries), "latents") as bar:
        store = build_latent_dists(entries, spec, base, method=cfg.latent_sampling, seed=cfg.seed,
                                   mode=cfg.latent_cache if cfg.latent_cache != "none" else "ram",
                                   folder=cache_dir / "latent_dists", device=device, progress=bar, skipped=skipped,
                                   reuse=not force)
    if store.bad:
        keep = [i for i in range(len(entries)) if i not in store.bad]
        entries = [entries[i] for i in keep]
        store.keep(keep)
        if not entries:
            raise StageError("no image of the dataset could be read")
        plan = T.make_plan(cfg, spec, entries, world)
    store.draw_once(cfg.seed)
    reporter.info(f"latent cache: {store.reused} reused, {store.encoded} encoded ({cfg.latent_cache})")
    base.vae.to("cpu")
    if device_type == "cuda":
        torch.cuda.empty_cache()

    def encode(texts):
        return encode_prompts(base, texts, clip_skip=cfg.clip_skip, max_token_length=cfg.max_token_length, device=device)

    text_cache = None
    fixed_texts = sorted({fill_template(t, e.caption, name) for e in entries for t in templates})
    if D.captions_are_fixed(spec.subsets) and len(fixed_texts) <= 4096:
        from datakit.train.cache import TextCache

        text_cache = TextCache()
        with accelerator.autocast():
            text_cache.fill(fixed_texts, encode)
        for te in base.text_encoders:
            te.to("cpu")
        reporter.info(f"text-encoder outputs cached for {len(text_cache.hidden)} prompts")

    # -- optimizer and schedules -----------------------------------------------------------------
    params = [p for p in network.parameters() if p.requires_grad]
    extra = {"fused": True} if device_type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(network.param_groups(hs.lr.value(step), hs.lr.value(step)), lr=hs.lr.value(step),
                                  betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, **extra)
    if optimizer_state:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, RuntimeError, KeyError) as exc:
            reporter.warn(f"--resume: the saved optimizer state does not fit ({exc}); the optimizer starts fresh")
    lr_scheduler = make_lr_scheduler(optimizer, cfg, hs, max_steps, step)
    optimizer = accelerator.prepare(optimizer)

    # -- the loop ------------------------------------------------------------------------------------
    log = T.LossLog(out / "loss.csv", keep_until=step if resume_path else 0, enabled=main)
    prompts = None
    if cfg.sample_every and main:
        from datakit.train.samples import read_prompts

        prompts = read_prompts(cfg.sample_prompts, trigger)
    batch_cache: dict[int, list[list[int]]] = {}
    micro = step * cfg.grad_accum
    is_reg = torch.tensor([spec.subsets[e.subset].is_reg for e in entries])
    ckpts = _checkpoints(out, name)
    last_good = str(ckpts[-1]) if ckpts else None
    model_hash, model_name = _model_hash(cfg.base_model)
    file_meta = {"name": name, "sd_checkpoint": model_hash, "sd_checkpoint_name": model_name,
                 "optional_info": f"trained with datakit on {plan.num_train_images} images"}
    loss_window: list[float] = []
    t_loop = time.perf_counter()
    steps_done = 0
    ctx = StepContext(cfg=cfg, spec=spec, base=base, store=store, text_cache=text_cache, encode=encode,
                      entries=entries, device=device, accelerator=accelerator, noise_scheduler=noise_scheduler,
                      alphas_cumprod=alphas_cumprod, is_reg=is_reg, templates=templates, name=name)
    with T.TrainProgress(reporter, max_steps, step, device_type) as progress:
        while step < max_steps:
            accum_loss = 0.0
            for _ in range(cfg.grad_accum):
                epoch = micro // plan.micro_per_epoch
                if epoch not in batch_cache:
                    batch_cache.clear()
                    batch_cache[epoch] = D.epoch_batches(entries, spec, plan.batch_size, cfg.seed, epoch)
                batches = batch_cache[epoch]
                idx = batches[((micro % plan.micro_per_epoch) * world + rank) % len(batches)]
                gen = T._step_generator(cfg.seed, micro, rank)
                torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # dropout draws
                loss = micro_step(ctx, idx, gen)
                value = float(loss.detach())
                if not math.isfinite(value) or value > cfg.nan_loss_limit:
                    T._diverged(value, step, last_good, cfg)
                accelerator.backward(loss / cfg.grad_accum)
                accum_loss += value / cfg.grad_accum
                micro += 1
            if world > 1:
                T._average_gradients(params, world)
            if hs.clip is not None:
                if accelerator.scaler is not None:
                    accelerator.unscale_gradients()
                clip_value = hs.clip.value(step)
                if cfg.clip_mode == "value":
                    torch.nn.utils.clip_grad_value_(params, clip_value)
                else:
                    torch.nn.utils.clip_grad_norm_(params, clip_value)
            if accelerator.scaler is None and any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
                T._diverged(float("nan"), step, last_good, cfg)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_done += 1
            loss_window = (loss_window + [accum_loss])[-20:]
            log.add(step, micro // plan.micro_per_epoch, accum_loss, lr)
            progress.update(step, accum_loss, lr)
            if cfg.save_every and step % cfg.save_every == 0 and step < max_steps:
                accelerator.wait_for_everyone()
                if main:
                    path = out / CHECKPOINTS / f"{name}-{step}.pt"
                    save_hypernetwork(network, path, optimizer=optimizer, step=step, **file_meta)
                    last_good = str(path)
                    if cfg.keep_last:
                        for old in _checkpoints(out, name)[:-cfg.keep_last]:
                            old.unlink(missing_ok=True)
                            Path(f"{old}.optim").unlink(missing_ok=True)
                    log.flush()
            if prompts and (step % cfg.sample_every == 0 or step == max_steps):
                T._samples(base, network, prompts, cfg, plan, device, accelerator,
                           out / "samples" / f"step-{step:06d}.png")
    train_s = time.perf_counter() - t_loop

    # -- outputs -----------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    outputs = []
    if main:
        dest = save_hypernetwork(network, out / f"{name}.pt", optimizer=optimizer, step=step, **file_meta)
        outputs.append(str(dest))
        T.finish_outputs(log, out, outputs)
    info = T.run_summary(
        "hypernetwork", out, outputs, cfg, dict(asdict(plan), max_steps=max_steps), base, overrides, spec, entries,
        skipped, fingerprint, step, store, text_cache, loss_window, t0, train_s, trigger, plan.keep_tokens, reporter,
        hypernetwork={"sizes": network.sizes, "layer_structure": network.layer_structure,
                      "activation": network.activation, "layer_norm": network.layer_norm,
                      "dropout_structure": network.dropout_structure, "activate_output": network.activate_output,
                      "weight_init": network.weight_init, "hooked_layers": {str(k): v for k, v in network.hooked.items()}},
        resumed_from=str(resume_path) if resume_path else None,
        speed={"steps_per_s": round(steps_done / train_s, 4) if train_s > 0 else None},
    )
    if main:
        write_stage_info(out, info)
    network.remove()
    return info


def use_sdpa(unet) -> None:
    """Keep (or set) PyTorch's scaled-dot-product attention: the hypernetwork hooks do not need the slow path."""
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    except Exception:  # noqa: BLE001 - newer diffusers use SDPA by default
        pass


def make_lr_scheduler(optimizer, cfg: TrainConfig, hs, max_steps: int, start_step: int):
    """An A1111 schedule string and/or cosine restarts -> our stateless scheduler; a plain --lr -> --lr-scheduler."""
    from datakit.train.lr_schedule import FunctionScheduler, rate_function

    if not hs.lr.is_constant or hs.cosine is not None or (cfg.lr_scheduler == "constant" and not cfg.warmup_steps):
        return FunctionScheduler(optimizer, rate_function(hs.lr, hs.cosine), start_step)
    from datakit.train.optim import make_scheduler

    sched = make_scheduler(optimizer, cfg, max_steps)
    for _ in range(start_step):  # diffusers' schedules are LambdaLRs: replay them to the resumed step
        sched.step()
    return sched


class StepContext:
    """Everything one micro-step reads (kept together so the loop and the benchmark share micro_step)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def micro_step(ctx: StepContext, idx: list[int], gen: torch.Generator) -> torch.Tensor:
    """One forward pass on one micro-batch (A1111's loss: MSE to the noise or velocity); returns the loss."""
    from datakit.train.hypernetwork_data import fill_template

    cfg, spec, entries, device = ctx.cfg, ctx.spec, ctx.entries, ctx.device
    flips = [bool(spec.subsets[entries[i].subset].flip_aug and torch.rand((), generator=gen) < 0.5) for i in idx]
    pairs = [ctx.store.get(i, f, gen) for i, f in zip(idx, flips)]
    latents = torch.stack([p[0] for p in pairs]).to(device)
    masks = None
    if any(p[1] is not None for p in pairs):
        masks = torch.stack([p[1] if p[1] is not None else torch.ones_like(latents[0, 0]) for p in pairs]).to(device)
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
    texts = []
    for i in idx:
        caption = D.process_caption(entries[i].caption, spec.subsets[entries[i].subset], rng)
        template = ctx.templates[int(rng.integers(len(ctx.templates)))] if len(ctx.templates) > 1 else ctx.templates[0]
        texts.append(fill_template(template, caption, ctx.name))
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=gen).to(device)
    if cfg.noise_offset:
        noise = noise + cfg.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=gen).to(device)
    timesteps = torch.randint(0, ctx.noise_scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
    noisy = ctx.noise_scheduler.add_noise(latents, noise, timesteps)
    with ctx.accelerator.autocast():
        if ctx.text_cache is not None:
            hidden, _ = ctx.text_cache.get(texts)
        else:
            with torch.no_grad():
                hidden, _ = ctx.encode(texts)
        pred = ctx.base.unet(noisy, timesteps, hidden.to(device)).sample
    target = (ctx.noise_scheduler.get_velocity(latents, noise, timesteps)
              if ctx.base.prediction_type == "v_prediction" else noise)
    loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
    if masks is not None:
        loss = loss * masks.unsqueeze(1)
    loss = loss.mean(dim=[1, 2, 3])
    reg = ctx.is_reg[idx].to(device)
    if cfg.prior_loss_weight != 1.0 and reg.any():
        loss = loss * torch.where(reg, torch.tensor(cfg.prior_loss_weight, device=device), torch.tensor(1.0, device=device))
    if cfg.min_snr_gamma:
        snr = ctx.alphas_cumprod[timesteps] / (1 - ctx.alphas_cumprod[timesteps])
        weight = torch.minimum(snr, torch.full_like(snr, cfg.min_snr_gamma))
        weight = weight / (snr + 1 if ctx.base.prediction_type == "v_prediction" else snr)
        loss = loss * weight
    return loss.mean()
