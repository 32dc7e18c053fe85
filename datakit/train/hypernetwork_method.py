"""`--method hypernetwork` on the shared loop: an A1111 hypernetwork, its schedules, templates and .pt files.

Specific to hypernetworks: A1111's latent sampling (once / deterministic / random, from the shared
latent cache), prompt templates, the A1111 learning-rate and clip schedule strings, cosine restarts,
AdamW only (as A1111), and the A1111 files: OUTPUT/NAME.pt, and checkpoints
OUTPUT/checkpoints/NAME-STEP.pt + .optim, which --resume (or any A1111 hypernetwork .pt) continues.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from datakit.errors import UsageError
from datakit.train.caption_aug import process_caption
from datakit.train.hypernetwork_config import SDXL_REFUSAL, hypernetwork_settings
from datakit.train.hypernetwork_data import fill_template, read_templates
from datakit.train.method import CHECKPOINTS, Optimisation, Resumed, RunContext


class HypernetworkMethod:
    """An A1111 hypernetwork (implements datakit.train.method.TrainingMethod)."""

    name = "hypernetwork"

    def __init__(self, cfg):
        self.cfg = cfg
        self.options = cfg.hypernetwork
        self.settings = hypernetwork_settings(cfg)
        self.templates = read_templates(self.options.template)
        self.latent_sampling = self.options.latent_sampling
        self.prompt_name = "hypernetwork"  # [name] in templates: the output name, set when the network is built
        self.loaded: dict | None = None  # the file a resumed run continues

    def announce(self) -> list[str]:
        hs = self.settings
        lines = [f"hypernetwork: layer structure {','.join(f'{x:g}' for x in hs.layer_structure)}, activation "
                 f"{hs.activation}; latent sampling {self.latent_sampling}"]
        cfg = self.cfg
        if not hs.lr.is_constant and (cfg.lr_scheduler != "constant" or cfg.warmup_steps):
            lines.append(f"note: the --lr schedule string {hs.lr.text!r} wins over --lr-scheduler {cfg.lr_scheduler}")
        if hs.cosine is not None and (cfg.lr_scheduler != "constant" or cfg.warmup_steps):
            lines.append("note: cosine restarts (--cycle-steps) win over --lr-scheduler / --warmup-steps")
        return lines

    def max_steps(self, planned: int, reporter) -> int:
        end = self.settings.lr.end
        if end is not None and end < planned:
            reporter.info(f"note: the --lr schedule ends at step {end}; training stops there (as A1111)")
            return end
        return planned

    def check_base(self, family: str | None) -> None:
        if family == "sdxl":
            raise UsageError(SDXL_REFUSAL)

    # -- the network -----------------------------------------------------------------------------
    def _resume_file(self, run: RunContext, reporter) -> Path | None:
        if not run.resume:
            return None
        if run.resume == "auto":
            found = self.checkpoints(run)
            if not found:
                reporter.info("--resume auto: no checkpoint yet, starting fresh")
            return found[-1] if found else None
        path = Path(run.resume)
        if not path.is_file():
            raise UsageError(f"--resume: {path} is not a file; give an A1111 hypernetwork .pt or 'auto'")
        return path

    def build_network(self, run: RunContext, base, reporter):
        from datakit.train.hypernetwork import Hypernetwork, read_hypernetwork_file, sizes_for
        from datakit.train.hypernetwork_format import comfyui_differences

        self.prompt_name = run.output_name
        hs = self.settings
        path = self._resume_file(run, reporter)
        if path is not None:
            self.loaded = dict(read_hypernetwork_file(path, what="--resume"), path=path)
            network = self.loaded["network"]
            reporter.info(f"continuing {path} at step {self.loaded['meta']['step']}; its structure and sizes are used as saved"
                          + ("" if self.loaded["optimizer_state"] else " (no matching .optim file: the optimizer starts fresh)"))
        else:
            torch.manual_seed(self.cfg.seed)  # weight init
            network = Hypernetwork(hs.sizes or sizes_for(base, base.family), hs.layer_structure, hs.activation,
                                   layer_norm=hs.layer_norm, dropout_structure=hs.dropout_structure,
                                   activate_output=hs.activate_output, weight_init=hs.weight_init)
        network.apply_to(base)
        if not network.hooked:
            raise UsageError(f"none of the hypernetwork sizes {network.sizes} matches an attention width of {base.name} "
                             f"(it has {sizes_for(base, base.family)})")
        unused = [s for s in network.sizes if s not in network.hooked]
        if unused:
            reporter.info(f"note: sizes {unused} match no attention layer of {base.name}; they are saved but never used")
        network.set_multiplier(self.options.strength)  # used by samples only: training runs at strength 1 (as A1111)
        reporter.info(f"network: {network.describe()}; {sum(network.hooked.values())} attention layers, "
                      f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M parameters")
        differences = comfyui_differences(network.activation, network.layer_norm, network.activate_output,
                                          network.dropout_structure)
        if differences:
            reporter.warn("ComfyUI will compute this hypernetwork differently from A1111 (the file loads in both): "
                          + "; ".join(differences) + ". docs/hypernetwork.md lists the portable settings")
        return network

    def prompt(self, caption: str, rng: random.Random) -> str:
        template = rng.choice(self.templates) if len(self.templates) > 1 else self.templates[0]
        return fill_template(template, caption, self.prompt_name)

    def fixed_prompts(self, run: RunContext) -> list[str]:
        subs = run.spec.subsets
        captions = [process_caption(e.caption, subs[e.subset].captions, random.Random(0)) for e in run.entries]
        return sorted({fill_template(t, c, run.output_name) for c in captions for t in self.templates})

    # -- optimisation ------------------------------------------------------------------------------
    def optimisation(self, network, run: RunContext, max_steps: int) -> Optimisation:
        hs, cfg = self.settings, self.cfg
        start = self.loaded["meta"]["step"] if self.loaded else 0
        extra = {"fused": True} if run.device_type == "cuda" else {"foreach": True}
        lr = hs.lr.value(start)
        optimizer = torch.optim.AdamW(network.param_groups(lr, lr), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                      weight_decay=cfg.weight_decay, **extra)

        def clip(params, step):
            if hs.clip is None:
                return None
            if cfg.clip_mode == "value":
                torch.nn.utils.clip_grad_value_(params, hs.clip.value(step))
                return None
            return float(torch.nn.utils.clip_grad_norm_(params, hs.clip.value(step)))

        return Optimisation(optimizer=optimizer, lr_scheduler=self._lr_scheduler(optimizer, max_steps, start),
                            clip=clip, clips=lambda step: hs.clip is not None)

    def _lr_scheduler(self, optimizer, max_steps: int, start_step: int):
        """An A1111 schedule string and/or cosine restarts -> a stateless scheduler; a plain --lr -> --lr-scheduler."""
        from datakit.train.lr_schedule import FunctionScheduler, rate_function
        from datakit.train.optim import make_scheduler

        hs, cfg = self.settings, self.cfg
        if not hs.lr.is_constant or hs.cosine is not None or (cfg.lr_scheduler == "constant" and not cfg.warmup_steps):
            return FunctionScheduler(optimizer, rate_function(hs.lr, hs.cosine), start_step)
        sched = make_scheduler(optimizer, cfg, max_steps)
        for _ in range(start_step):  # diffusers' schedules are LambdaLRs: replay them to the resumed step
            sched.step()
        return sched

    # -- files ---------------------------------------------------------------------------------------
    def checkpoints(self, run: RunContext) -> list[Path]:
        folder = run.out / CHECKPOINTS
        if not folder.is_dir():
            return []
        found = []
        for p in folder.glob(f"{run.output_name}-*.pt"):
            tail = p.stem[len(run.output_name) + 1:]
            if tail.isdigit():
                found.append((int(tail), p))
        return [p for _, p in sorted(found)]

    def resume(self, run: RunContext, network, opt: Optimisation, scaler, reporter) -> Resumed:
        if not self.loaded:
            return Resumed()
        state = self.loaded["optimizer_state"]
        if state:
            try:
                opt.optimizer.load_state_dict(state)
            except (ValueError, RuntimeError, KeyError) as exc:
                reporter.warn(f"--resume: the saved optimizer state does not fit ({exc}); the optimizer starts fresh")
        return Resumed(int(self.loaded["meta"]["step"]), str(self.loaded["path"]))

    def _file_meta(self, run: RunContext) -> dict:
        from datakit.train.hypernetwork_format import shorthash

        path = Path(str(self.cfg.base_model)).expanduser()
        return {"name": run.output_name, "sd_checkpoint": shorthash(path) if path.is_file() else None,
                "sd_checkpoint_name": path.stem if path.is_file() else (path.name or str(self.cfg.base_model)),
                # "trigger: X" is how `datakit eval` (and a reader) finds the word the hypernetwork was trained with
                "optional_info": f"trained with datakit on {run.plan.num_train_images} images"
                                 + (f"; trigger: {run.trigger}" if run.trigger else "")}

    def save_checkpoint(self, run: RunContext, step: int, network, opt: Optimisation, scaler, base) -> Path:
        from datakit.train.hypernetwork_format import save_hypernetwork

        path = save_hypernetwork(network, run.out / CHECKPOINTS / f"{run.output_name}-{step}.pt", optimizer=opt.optimizer,
                                 step=step, **self._file_meta(run))
        if self.cfg.keep_last:
            for old in [p for p in self.checkpoints(run) if p not in run.protected][:-self.cfg.keep_last]:
                old.unlink(missing_ok=True)
                Path(f"{old}.optim").unlink(missing_ok=True)
        return path

    def save_final(self, run: RunContext, step: int, network, opt: Optimisation, base) -> Path:
        from datakit.train.hypernetwork_format import save_hypernetwork

        return save_hypernetwork(network, run.out / f"{run.output_name}.pt", optimizer=opt.optimizer, step=step,
                                 **self._file_meta(run))

    def summary(self, network) -> dict:
        return {"hypernetwork": {"sizes": network.sizes, "layer_structure": network.layer_structure,
                                 "activation": network.activation, "layer_norm": network.layer_norm,
                                 "dropout_structure": network.dropout_structure,
                                 "activate_output": network.activate_output, "weight_init": network.weight_init,
                                 "hooked_layers": {str(k): v for k, v in network.hooked.items()}}}
