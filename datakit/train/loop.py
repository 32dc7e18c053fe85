"""The one training loop: dataset -> plan -> base model -> method's network -> caches -> steps -> files.

Every method (LoRA, hypernetwork, ...) runs here; what differs is a `TrainingMethod`
(datakit.train.method). Determinism and several processes: see datakit.train.runtime.
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
from datakit.train import runtime as R
from datakit.train.buckets import epoch_batches
from datakit.train.config import TrainConfig, config_record
from datakit.train.method import Resumed, RunContext, TrainingMethod
from datakit.train.plan import Plan, make_plan
from datakit.train.run_files import (check_output_outside_input, checkpoints_belong_to, mark_checkpoints, output_name,
                                     prepare_output, run_fingerprint)


def make_method(cfg: TrainConfig) -> TrainingMethod:
    """The TrainingMethod for --method."""
    if cfg.method == "hypernetwork":
        from datakit.train.hypernetwork_method import HypernetworkMethod

        return HypernetworkMethod(cfg)
    from datakit.train.lora_method import LoRAMethod

    return LoRAMethod(cfg)


def estimate(plan: Plan, cfg: TrainConfig, family: str, device_type: str, mixed: str | None = None) -> dict:
    """Memory and time estimate from the base model's configs, a slice of its UNet timed on the device, no weights loaded."""
    from datakit.train.estimate import estimate as model_based

    return model_based(plan, cfg, family, device_type, mixed, measure=True)


def run_train(cfg: TrainConfig, reporter, *, force: bool = False, base=None) -> dict:
    """`datakit train`: returns the datakit.json info. base: an already loaded BaseModel (benchmarks, notebooks)."""
    method = make_method(cfg)
    return _Run(cfg, method, reporter, force).run(base)


class _Run:
    """One training run, in the order it happens (each step a method, so each stays readable)."""

    def __init__(self, cfg: TrainConfig, method: TrainingMethod, reporter, force: bool):
        self.cfg, self.method, self.reporter, self.force = cfg, method, reporter, force
        self.started, self.t0 = time.time(), time.perf_counter()

    # -- set-up --------------------------------------------------------------------------------
    def run(self, base) -> dict:
        cfg, reporter = self.cfg, self.reporter
        spec = D.read_dataset(cfg.dataset)
        spec, overrides = D.with_overrides(spec, cfg.dataset_overrides)
        entries, skipped = D.collect_entries(spec)
        if not entries:
            raise UsageError(f"{cfg.dataset}: the dataset has no usable images")
        name = output_name(cfg, spec.trigger, self.method.name)
        if cfg.output is not None:
            check_output_outside_input(Path(cfg.output), Path(cfg.dataset), spec)
        device_type = R.device_type(cfg.device)
        if device_type == "cuda" and not torch.cuda.is_available():
            reporter.warn("--device cuda asked for but no CUDA GPU is available; using the CPU")
            device_type = "cpu"
        mixed = R.mixed_precision(cfg.mixed_precision, device_type)
        if mixed == "fp16" and device_type == "cpu":
            reporter.warn("fp16 mixed precision is not supported on the CPU; using bf16")
            mixed = "bf16"
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # accelerate keeps one global state per process; a second run in the same process (tests,
        # notebooks) may ask for another precision. The process group (PartialState) is kept.
        AcceleratorState._reset_state()
        accelerator = Accelerator(mixed_precision=mixed, cpu=device_type == "cpu")
        if not accelerator.is_main_process:
            reporter.quiet = True
        plan = make_plan(cfg, spec, entries, accelerator.num_processes)
        max_steps = self.method.max_steps(plan.max_steps, reporter)
        for note in spec.notes:
            reporter.info(f"note: {note}")
        for change in overrides:
            reporter.info(f"override: {change}")
        reporter.info(f"dataset: {plan.num_train_images} images (+{plan.num_reg_images} reg) in {len(spec.subsets)} subsets, "
                      f"{plan.samples_per_epoch} samples/epoch, buckets {plan.buckets}")
        reporter.info(f"plan: {max_steps} steps = {plan.epochs} epochs x {plan.steps_per_epoch} steps, batch {plan.batch_size}"
                      f" x {accelerator.num_processes} process(es) x {cfg.grad_accum} accumulation")
        for line in self.method.announce():
            reporter.info(line)
        if cfg.dry_run:
            return self._dry_run(plan, spec, entries, skipped, overrides, device_type, mixed, name)
        out = Path(cfg.output)
        run = RunContext(cfg=cfg, out=out, output_name=name, plan=plan, spec=spec, entries=entries, trigger=spec.trigger,
                         started=self.started, fingerprint=run_fingerprint(cfg, spec, entries, self.method.name),
                         device_type=device_type, force=self.force)
        run.settings = {"seed": cfg.seed, "method": self.method.name, "fingerprint": run.fingerprint}
        from datakit.manifest import read_stage_info

        previous = read_stage_info(out) if out.is_dir() else None
        if (not self.force and previous and previous.get("fingerprint") == run.fingerprint and previous.get("file")
                and Path(previous["file"]).exists()):
            reporter.info(f"train: nothing to do, {previous['file']} is up to date (--force retrains)")
            return dict(previous, nothing_to_do=True)
        prepare_output(out)
        run.resume = self._resume_request(run)
        return self._train(run, accelerator, mixed, max_steps, base, overrides, skipped)

    def _resume_request(self, run: RunContext) -> str | None:
        """--resume as given; else "auto" when OUT holds checkpoints of this very run (interrupted): a plain re-run continues."""
        if self.force:
            return None
        if self.cfg.resume:
            return self.cfg.resume
        if checkpoints_belong_to(run) and self.method.checkpoints(run):
            self.reporter.info(f"continuing the interrupted run from {self.method.checkpoints(run)[-1]} "
                               "(--force starts over)")
            return "auto"
        return None

    def _dry_run(self, plan, spec, entries, skipped, overrides, device_type, mixed, name) -> dict:
        from datakit.train.estimate import describe
        from datakit.train.model import family_guess

        cfg = self.cfg
        fam = family_guess(cfg.base_model, cfg.family)
        self.method.check_base(fam)
        est = estimate(plan, cfg, fam, device_type, mixed)
        self.reporter.info(f"estimate ({est.get('family', fam)}, {device_type}, {mixed}): ~{est['memory_gb']} GB, "
                           f"~{est['seconds_per_step']} s/step, ~{est['total_minutes']} min in all (rough)")
        for line in describe(est):
            self.reporter.info(line)
        return {"stage": "train", "method": self.method.name, "dry_run": True, "plan": asdict(plan), "estimate": est,
                "overrides": overrides, "notes": spec.notes, "output_name": name, "skipped": skipped,
                "counts": {"in": len(entries) + len(skipped), "out": 0, "skipped": len(skipped)}}

    def _load_base(self, base, device, mixed):
        from datakit.train.model import load_base_model

        cfg = self.cfg
        if base is None:
            self.method.check_base(cfg.family)
            base = load_base_model(cfg.base_model, family=cfg.family, config_dir=cfg.config_dir,
                                   prediction_type=cfg.prediction_type)
        self.method.check_base(base.family)
        for note in base.notes:
            self.reporter.info(f"note: {note}")
        if base.family == "sdxl" and cfg.clip_skip > 2:
            self.reporter.info("note: SDXL conditions on the penultimate layer of both text encoders (as kohya, A1111 "
                               "and ComfyUI); --clip-skip does not apply")
        self.reporter.info(f"base model: {base.name} ({base.family}, {base.prediction_type}); device {device} ({mixed} precision)")
        dtype = R.weight_dtype(mixed)
        for m in [base.unet, base.vae, *base.text_encoders]:
            m.requires_grad_(False)
            m.eval()
        R.place(base.vae, device, torch.float32)  # fp32 VAE: SDXL's overflows in fp16; it runs once per image
        R.place(base.unet, device, dtype)
        for te in base.text_encoders:
            R.place(te, device, dtype)
        R.use_sdpa(base.unet)
        if cfg.gradient_checkpointing:
            base.unet.enable_gradient_checkpointing()
        return base

    # -- the steps -------------------------------------------------------------------------------
    def _train(self, run: RunContext, accelerator, mixed: str, max_steps: int, base, overrides, skipped) -> dict:
        from datakit.train.cache import build_latents
        from datakit.train.feedback import LossLog, TrainProgress, speed
        from datakit.train.objective import make_noise_scheduler
        from datakit.train.step import StepContext, micro_batch_loss

        cfg, reporter, method, out = self.cfg, self.reporter, self.method, run.out
        device, world, rank, main = accelerator.device, accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
        evals = None
        if cfg.eval_every and main:  # before the base model loads: a bad --eval-* option fails at once
            from datakit.train.checkpoint_eval import CheckpointEval

            evals = CheckpointEval(cfg, out, run.trigger, run.plan.resolution, device, reporter)
        base = self._load_base(base, device, mixed)
        check_sizes(run.entries, base)
        scheduler = make_noise_scheduler(base.scheduler_config, base.prediction_type, zero_terminal_snr=cfg.zero_terminal_snr)
        network = method.build_network(run, base, reporter)
        network.to(device, torch.float32)  # trainable weights stay fp32 whatever the mixed precision
        network.train()

        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
        store = self._latents(run, base, accelerator, cache_dir, skipped, build_latents)
        if store.bad:
            keep = [i for i in range(len(run.entries)) if i not in store.bad]
            run.entries = [run.entries[i] for i in keep]
            store.keep(keep)
            if not run.entries:
                raise StageError("no image of the dataset could be read")
            run.plan = make_plan(cfg, run.spec, run.entries, world)
            max_steps = method.max_steps(run.plan.max_steps, reporter)
        reporter.info(f"latent cache: {store.reused} reused, {store.encoded} encoded ({cfg.latent_cache})")
        base.vae.to("cpu")  # not needed until samples
        if run.device_type == "cuda":
            torch.cuda.empty_cache()
        text_cache, encode = self._text(run, base, network, accelerator, device)

        opt = method.optimisation(network, run, max_steps)
        opt.optimizer = accelerator.prepare(opt.optimizer)  # fp16: loss scaling; the network itself is not wrapped
        resumed = method.resume(run, network, opt, accelerator.scaler, reporter) if run.resume else Resumed()
        step = resumed.step
        if evals is not None:
            evals.start(step)
        if step >= max_steps:
            raise UsageError(f"{resumed.source} is already at step {step}, not below the {max_steps} steps planned; "
                             "give a larger --max-steps")
        params = [p for p in network.parameters() if p.requires_grad]
        ctx = StepContext(base=base, spec=run.spec, entries=run.entries, store=store, text_cache=text_cache, encode=encode,
                          prompt=method.prompt, scheduler=scheduler, alphas_cumprod=scheduler.alphas_cumprod.to(device),
                          is_reg=torch.tensor([run.spec.subsets[e.subset].is_reg for e in run.entries]), device=device,
                          autocast=accelerator.autocast, trains_text_encoder=network.trains_text_encoder,
                          noise_offset=cfg.noise_offset, min_snr_gamma=cfg.min_snr_gamma,
                          prior_loss_weight=cfg.prior_loss_weight, max_steps=max_steps)
        log = LossLog(out / "loss.csv", keep_until=step if resumed.source else 0, enabled=main)
        prompts = self._sample_prompts(run) if cfg.sample_every and main else None
        plan = run.plan
        ckpts = method.checkpoints(run)
        last_good = str(ckpts[-1]) if ckpts else None
        micro = step * cfg.grad_accum
        batches: dict[int, list[list[int]]] = {}
        loss_window: list[float] = []
        step_ends: list[float] = []
        t_loop, steps_done = time.perf_counter(), 0
        try:
            with TrainProgress(reporter, max_steps, step, run.device_type) as progress:
                while step < max_steps:
                    accum = 0.0
                    for _ in range(cfg.grad_accum):
                        epoch = micro // plan.micro_per_epoch
                        if epoch not in batches:
                            batches = {epoch: epoch_batches(run.entries, run.spec, plan.batch_size, cfg.seed, epoch)}
                        order = batches[epoch]
                        idx = order[((micro % plan.micro_per_epoch) * world + rank) % len(order)]
                        gen = R.step_generator(cfg.seed, micro, rank)
                        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # network dropout draws
                        loss = micro_batch_loss(ctx, idx, gen, epoch=epoch, step=step)
                        value = float(loss.detach())
                        if not math.isfinite(value) or value > cfg.nan_loss_limit:
                            diverged(value, step, last_good, cfg)
                        accelerator.backward(loss / cfg.grad_accum)
                        accum += value / cfg.grad_accum
                        micro += 1
                    if world > 1:
                        R.average_gradients(params, world)
                    if accelerator.scaler is not None and opt.clips(step):
                        accelerator.unscale_gradients()
                    norm = opt.clip(params, step)
                    # fp16's loss scaler skips steps with inf gradients by itself; otherwise they would poison the weights.
                    if accelerator.scaler is None:
                        norm = gradient_norm(params) if norm is None else norm
                        if not math.isfinite(norm):
                            diverged(norm, step, last_good, cfg)
                    lr = opt.lr_scheduler.get_last_lr()[0]
                    opt.optimizer.step()
                    opt.lr_scheduler.step()
                    opt.optimizer.zero_grad(set_to_none=True)
                    step += 1
                    steps_done += 1
                    step_ends.append(time.perf_counter())
                    loss_window = (loss_window + [accum])[-20:]
                    log.add(step, micro // plan.micro_per_epoch, accum, lr)
                    progress.update(step, accum, lr)
                    measure = bool(cfg.eval_every) and step % cfg.eval_every == 0
                    if (measure or (cfg.save_every and step % cfg.save_every == 0)) and step < max_steps:
                        accelerator.wait_for_everyone()
                        if main:  # every measured step gets a checkpoint, so the best one can be used
                            saved = method.save_checkpoint(run, step, network, opt, accelerator.scaler, base)
                            last_good = str(saved)
                            mark_checkpoints(run)
                            log.flush()
                            if evals is not None and measure:
                                self._measure(evals, run, base, network, step, saved, accelerator)
                        accelerator.wait_for_everyone()
                    if prompts and (step % cfg.sample_every == 0 or step == max_steps):
                        self._samples(base, network, prompts, plan, device, accelerator, out / "samples" / f"step-{step:06d}.png")
        except KeyboardInterrupt:
            if main:
                log.flush()
            where = f"the last checkpoint is {last_good}; " if last_good else "no checkpoint was written (use --save-every); "
            reporter.warn(f"interrupted at step {step}: {where}run the same command again to continue"
                          + (" from it" if last_good else ""))
            raise
        train_s = time.perf_counter() - t_loop
        return self._finish(run, network, opt, base, step, steps_done, train_s, step_ends, loss_window, store, text_cache,
                            overrides, skipped, resumed, accelerator, log, speed, max_steps, evals)

    def _measure(self, evals, run: RunContext, base, network, step: int, saved: Path, accelerator) -> None:
        """One --eval-every measurement; the best checkpoint so far is kept from --keep-last's pruning."""
        evals.measure(base, network, step, saved, accelerator.autocast)
        run.saved[step] = saved
        best = evals.best()
        run.protected = {run.saved[best.step]} if best.step in run.saved else set()

    def _latents(self, run, base, accelerator, cache_dir, skipped, build_latents):
        """The main process encodes and writes the disk cache first; the others then read it."""
        cfg = self.cfg
        folder = cache_dir / "latents"
        mode = cfg.latent_cache if cfg.latent_cache != "none" else "ram"
        reuse = not self.force
        with self.reporter.progress(len(run.entries), "latents") as bar:
            if mode == "disk" and accelerator.num_processes > 1:
                if accelerator.is_main_process:
                    build_latents(run.entries, run.spec, base, sampling=self.method.latent_sampling, mode="disk",
                                  folder=folder, device=accelerator.device, seed=cfg.seed, reuse=reuse)
                accelerator.wait_for_everyone()
                reuse = True  # the main process has just rewritten the cache
            return build_latents(run.entries, run.spec, base, sampling=self.method.latent_sampling, mode=mode,
                                 folder=folder, device=accelerator.device, seed=cfg.seed, progress=bar,
                                 skipped=skipped, reuse=reuse)

    def _text(self, run, base, network, accelerator, device):
        """The prompt encoder, and a cache of every prompt when the text encoder is frozen and captions fixed."""
        from datakit.train.conditioning import chunk_count, encode_prompts

        cfg = self.cfg

        def encode(texts):
            return encode_prompts(base, texts, clip_skip=cfg.clip_skip, max_token_length=cfg.max_token_length,
                                  device=device)

        if network.trains_text_encoder:
            for te in base.text_encoders if cfg.gradient_checkpointing else []:
                # non-reentrant: the frozen embeddings need no grad for LoRA grads to flow
                if hasattr(te, "activation_checkpointing_enable"):  # transformers >= 5.x
                    te.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return None, encode
        prompts = self.method.fixed_prompts(run)
        if not run.plan.captions_fixed or len(prompts) > 4096:
            return None, encode
        from datakit.train.cache import TextCache

        cache = TextCache()
        with accelerator.autocast():
            cache.fill(prompts, encode, lambda p: chunk_count(base.tokenizers, p, cfg.max_token_length))
        for te in base.text_encoders:  # frozen and cached: its memory goes back
            te.to("cpu")
        self.reporter.info(f"text-encoder outputs cached for {len(cache.hidden)} prompts")
        return cache, encode

    def _sample_prompts(self, run):
        from datakit.train.samples import read_prompts

        return read_prompts(self.cfg.sample_prompts, run.trigger)

    def _samples(self, base, network, prompts, plan, device, accelerator, dest: Path) -> None:
        from datakit.train.samples import generate_grid

        cfg = self.cfg
        network.eval()
        try:
            generate_grid(base, prompts, size=plan.resolution, steps=cfg.sample_steps, cfg_scale=cfg.sample_cfg,
                          device=device, autocast=accelerator.autocast, dest=dest)
        finally:
            network.train()

    # -- the end -----------------------------------------------------------------------------------
    def _finish(self, run, network, opt, base, step, steps_done, train_s, step_ends, loss_window, store, text_cache,
                overrides, skipped, resumed, accelerator, log, speed, max_steps, evals=None) -> dict:
        from datakit.manifest import write_stage_info

        accelerator.wait_for_everyone()
        distributed = None
        if accelerator.num_processes > 1:
            distributed = {"processes": accelerator.num_processes, "weights_identical": R.weights_agree(network)}
            if not distributed["weights_identical"]:
                raise StageError("the training processes ended with different weights (a datakit bug; please report it)")
        outputs = []
        if accelerator.is_main_process:
            outputs.append(str(self.method.save_final(run, step, network, opt, base)))
            log.flush()
            plot = log.plot(run.out / "loss.png")
            if plot:
                outputs.append(str(plot))
            if evals is not None:
                evals.measure(base, network, step, Path(outputs[0]), accelerator.autocast)
                best = evals.best()
                self.reporter.info(f"eval: best checkpoint {best.checkpoint} (step {best.step}): {best.reason}"
                                   if best.checkpoint else f"eval: no best checkpoint: {best.reason}")
        cfg, plan = self.cfg, run.plan
        info = {
            "stage": "train",
            "method": self.method.name,
            "output": str(run.out),
            "file": outputs[0] if outputs else None,
            "outputs": outputs,
            "config": config_record(cfg),
            "plan": dict(asdict(plan), max_steps=max_steps),
            "base_model": {"name": base.name, "family": base.family, "prediction_type": base.prediction_type},
            "overrides": overrides,
            "notes": run.spec.notes + base.notes,
            "counts": {"in": len(run.entries) + len(skipped), "out": len(outputs[:1]), "skipped": len(skipped), "failed": 0},
            "skipped": skipped,
            "fingerprint": run.fingerprint,
            "steps": step,
            "cache": {"latents_reused": store.reused, "latents_encoded": store.encoded, "text": text_cache is not None},
            "final_loss": round(float(np.mean(loss_window)), 6) if loss_window else None,
            "timings": {"total_s": round(time.perf_counter() - self.t0, 3), "train_s": round(train_s, 3)},
            "carry": {k: v for k, v in {"trigger": run.trigger, "keep_tokens": plan.keep_tokens or None}.items() if v is not None},
            "warnings": list(self.reporter.warnings),
            "resumed_from": resumed.source,
            "distributed": distributed,
            "speed": speed(steps_done, train_s, step_ends, run.device_type),
            **self.method.summary(network),
        }
        if evals is not None:
            info["eval"] = evals.summary()
        if accelerator.is_main_process:
            write_stage_info(run.out, info)
        network.remove()  # the base model is left as it was given
        if hasattr(accelerator, "end_training"):
            accelerator.end_training()
        return info


def gradient_norm(params) -> float:
    """The global gradient norm (inf or NaN when any gradient is)."""
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def check_sizes(entries, base) -> None:
    """Every bucket must divide down through the VAE and the UNet's downsamplers (64 px for SD)."""
    unit = base.vae_downscale * 2 ** (len(base.unet.config.block_out_channels) - 1)
    bad = sorted({e.bucket for e in entries if e.bucket[0] % unit or e.bucket[1] % unit})
    if bad:
        w, h = bad[0]
        raise UsageError(f"training size {w}x{h} is not a multiple of {unit} px, which this model needs; "
                         f"use a --resolution that is (e.g. {max(unit, w // unit * unit)})")


def diverged(value: float, step: int, last_good: str | None, cfg: TrainConfig):
    """Stop a run whose loss or gradients became NaN/inf or exploded, naming what is kept and what to try."""
    keep = f"the last good checkpoint is kept: {last_good}" if last_good else "no checkpoint was written yet (use --save-every)"
    raise StageError(f"training diverged at step {step + 1} (loss {value}); {keep}. Try a lower --lr (now {cfg.lr}), "
                     "--mixed-precision bf16 instead of fp16, or --max-grad-norm 1.0")
