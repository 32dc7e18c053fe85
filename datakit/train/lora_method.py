"""`--method lora` on the shared loop: kohya's LoRA, its optimizers and schedules, kohya files and checkpoint folders.

Checkpoints: OUTPUT/checkpoints/step-NNNNNN/ holds the LoRA file of that step (usable as is) and the
training state (datakit.train.checkpoint: safetensors + JSON, never a pickle), which --resume reads.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

from datakit.train import data as D
from datakit.train.caption_aug import process_caption
from datakit.train.method import CHECKPOINTS, Optimisation, Resumed, RunContext


class LoRAMethod:
    """A kohya-format LoRA (implements datakit.train.method.TrainingMethod)."""

    name = "lora"
    latent_sampling = "deterministic"  # the VAE's mean, as kohya caches it

    def __init__(self, cfg):
        self.cfg = cfg
        self.options = cfg.lora

    def announce(self) -> list[str]:
        o = self.options
        line = f"LoRA rank {o.rank}, alpha {o.alpha:g}: the update is scaled by alpha/rank = {o.scale:g}"
        if o.conv_rank:
            line += f"; conv rank {o.conv_rank}, conv alpha {o.conv_alpha:g} (scale {o.conv_alpha / o.conv_rank:g})"
        return [line]

    def max_steps(self, planned: int, reporter) -> int:
        return planned

    def check_base(self, family: str | None) -> None:
        return None

    def build_network(self, run: RunContext, base, reporter):
        from datakit.train.lora import LoRANetwork

        o = self.options
        torch.manual_seed(self.cfg.seed)  # the LoRA down-weights' random init
        network = LoRANetwork(rank=o.rank, alpha=o.alpha, conv_rank=o.conv_rank, conv_alpha=o.conv_alpha,
                              dropout=o.dropout, rank_dropout=o.rank_dropout, module_dropout=o.module_dropout,
                              train_text_encoder=o.train_text_encoder)
        network.apply_to(base)
        if o.network_weights:
            network.load(o.network_weights)
            reporter.info(f"started from {o.network_weights}")
        reporter.info(f"network: LoRA {len(network.unet_loras)} UNet + {len(network.te_loras)} text-encoder modules, "
                      f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters")
        return network

    def prompt(self, caption: str, rng: random.Random) -> str:
        return caption

    def fixed_prompts(self, run: RunContext) -> list[str]:
        subs = run.spec.subsets
        return [process_caption(e.caption, subs[e.subset].captions, random.Random(0)) for e in run.entries]

    def optimisation(self, network, run: RunContext, max_steps: int) -> Optimisation:
        from datakit.train.optim import clip_gradients, make_optimizer, make_scheduler

        cfg = self.cfg
        unet_lr = cfg.unet_lr if cfg.unet_lr is not None else cfg.lr
        te_lr = cfg.text_encoder_lr if cfg.text_encoder_lr is not None else cfg.lr
        optimizer = make_optimizer(cfg.optimizer, network.param_groups(unet_lr, te_lr), cfg, device_type=run.device_type)
        return Optimisation(optimizer=optimizer, lr_scheduler=make_scheduler(optimizer, cfg, max_steps),
                            clip=lambda params, step: clip_gradients(params, cfg), clips=lambda step: bool(cfg.max_grad_norm))

    # -- files ---------------------------------------------------------------------------------------
    def checkpoints(self, run: RunContext) -> list[Path]:
        from datakit.train.checkpoint import has_training_state

        folder = run.out / CHECKPOINTS
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and has_training_state(p))

    def resume(self, run: RunContext, network, opt: Optimisation, scaler, reporter) -> Resumed:
        from datakit.errors import UsageError
        from datakit.train.checkpoint import apply_training_state, load_training_state

        if run.resume == "auto":
            found = self.checkpoints(run)
            if not found:
                reporter.info("--resume auto: no checkpoint yet, starting fresh")
                return Resumed()
            path = found[-1]
        else:
            path = Path(run.resume)
            if not path.is_dir():
                raise UsageError(f"--resume: {path} is not a checkpoint folder (give OUTPUT/checkpoints/step-NNNNNN or 'auto')")
        state = load_training_state(path, what="--resume")
        step = apply_training_state(state, network=network, optimizer=opt.optimizer, lr_scheduler=opt.lr_scheduler,
                                    scaler=scaler, source=str(path), what="--resume")
        network.refresh_scales()  # alpha came back with the state
        reporter.info(f"resumed from {path} at step {step}")
        return Resumed(step, str(path))

    def _metadata(self, run: RunContext, step: int, network, opt: Optimisation, base, epoch: int) -> dict:
        from datakit.train.formats import build_metadata, kohya_bucket_info

        plan = run.plan
        meta = build_metadata(cfg=self.cfg, base=base, plan=plan, network=network, optimizer=opt.optimizer, step=step,
                              epoch=epoch, started=run.started, trigger=run.trigger,
                              tag_frequency=D.tag_frequency(run.spec, run.entries),
                              dataset_dirs=D.dataset_dirs(run.spec, run.entries),
                              bucket_info=kohya_bucket_info(run.spec, run.entries) if plan.enable_bucket else None)
        meta["ss_output_name"] = run.output_name
        return meta

    def save_checkpoint(self, run: RunContext, step: int, network, opt: Optimisation, scaler, base) -> Path:
        from datakit.train.checkpoint import atomic_folder, capture_training_state, save_training_state
        from datakit.train.formats import save_dtype

        folder = run.out / CHECKPOINTS / f"step-{step:06d}"
        meta = self._metadata(run, step, network, opt, base, step // run.plan.steps_per_epoch)
        with atomic_folder(folder) as tmp:  # a checkpoint folder exists only when complete
            network.save(tmp / f"{run.output_name}-step{step:06d}.safetensors", meta, save_dtype(self.options.save_precision))
            save_training_state(tmp, capture_training_state(step, network, optimizer=opt.optimizer,
                                                            lr_scheduler=opt.lr_scheduler, scaler=scaler,
                                                            settings=run.settings))
        if self.cfg.keep_last:
            for old in [p for p in self.checkpoints(run) if p not in run.protected][:-self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def save_final(self, run: RunContext, step: int, network, opt: Optimisation, base) -> Path:
        import math

        from datakit.train.formats import save_diffusers, save_dtype

        plan = run.plan
        dtype = save_dtype(self.options.save_precision)
        if self.options.format == "diffusers":
            return save_diffusers(network, base, run.out / run.output_name, dtype)
        epoch = math.ceil(step * self.cfg.grad_accum / plan.micro_per_epoch)
        meta = self._metadata(run, step, network, opt, base, epoch)
        dest = run.out / f"{run.output_name}.safetensors"
        network.save(dest, meta, dtype)
        return dest

    def summary(self, network) -> dict:
        return {"network": {"rank": network.rank, "alpha": network.alpha, "scale": network.alpha / network.rank,
                            "conv_rank": network.conv_rank, "conv_alpha": network.conv_alpha,
                            "modules": len(network.modules_list())}}
