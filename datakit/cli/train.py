"""`datakit train`: train a LoRA on an emitted (or any kohya) dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.common import DeviceOpt, ForceOpt, JsonOpt, QuietOpt, execute

P = "Network"
O = "Optimisation"
D = "Dataset overrides (default: the dataset's own setting)"
S = "Speed and memory"
F = "Checkpoints, samples and output"
M = "Base model"
H = "Hypernetwork (--method hypernetwork, A1111 .pt; see docs/hypernetwork.md)"


def register(app: typer.Typer) -> None:
    """Add the train command."""

    @app.command("train")
    def train(
        dataset: Annotated[Optional[Path], typer.Argument(help="emit's OUT folder, a kohya dataset TOML, or a kohya folder-mode parent (N_name/ subfolders).", show_default=False)] = None,
        base_model: Annotated[Optional[str], typer.Option("--base-model", envvar="DATAKIT_BASE_MODEL", help="Base model: a diffusers folder, a .safetensors/.ckpt checkpoint, or a Hugging Face id in the local cache (env DATAKIT_BASE_MODEL).", rich_help_panel=M, show_default=False)] = None,
        method: Annotated[Optional[str], typer.Option("--method", help="What to train: lora (kohya .safetensors) or hypernetwork (A1111 .pt).", show_default="lora")] = None,
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder (LoRA file, checkpoints, samples, loss.csv).", show_default=False)] = None,
        config: Annotated[Optional[Path], typer.Option("--config", help="A TOML file holding any of these options (flags given here win).", show_default=False)] = None,
        output_name: Annotated[Optional[str], typer.Option("--output-name", help="File name without extension, a plain name (default: the trigger word made safe, else the method's name).", rich_help_panel=F, show_default=False)] = None,
        format: Annotated[Optional[str], typer.Option("--format", help="File layout: kohya (A1111, ComfyUI, kohya, diffusers load it) or diffusers.", rich_help_panel=F, show_default="kohya")] = None,
        family: Annotated[Optional[str], typer.Option("--family", help="Model family sd1|sd2|sdxl (default: detected).", rich_help_panel=M, show_default=False)] = None,
        config_dir: Annotated[Optional[Path], typer.Option("--config-dir", help="Folder with the base model's configs/tokenizers, for single-file checkpoints.", rich_help_panel=M, show_default=False)] = None,
        prediction_type: Annotated[Optional[str], typer.Option("--prediction-type", help="epsilon or v_prediction (default: what the model says, else epsilon).", rich_help_panel=M, show_default=False)] = None,
        zero_terminal_snr: Annotated[Optional[bool], typer.Option("--zero-terminal-snr/--no-zero-terminal-snr", help="Rescale the noise schedule to zero terminal SNR (use with v_prediction).", rich_help_panel=M, show_default=False)] = None,
        rank: Annotated[Optional[int], typer.Option("--rank", help="LoRA rank (network dim).", rich_help_panel=P, show_default="16")] = None,
        alpha: Annotated[Optional[float], typer.Option("--alpha", help="LoRA alpha; the update is scaled by alpha/rank (kohya's default 1).", rich_help_panel=P, show_default="1")] = None,
        conv_rank: Annotated[Optional[int], typer.Option("--conv-rank", help="Also train 3x3 convs of resnets and samplers with this rank (LoCon).", rich_help_panel=P, show_default=False)] = None,
        conv_alpha: Annotated[Optional[float], typer.Option("--conv-alpha", help="Alpha of the conv modules (kohya's default 1).", rich_help_panel=P, show_default="1")] = None,
        dropout: Annotated[Optional[float], typer.Option("--dropout", help="Dropout on the LoRA hidden units; hypernetwork: this rate on the hidden layers (A1111's rule; A1111 uses 0.3).", rich_help_panel=P, show_default="0")] = None,
        rank_dropout: Annotated[Optional[float], typer.Option("--rank-dropout", help="Dropout of whole ranks.", rich_help_panel=P, show_default="0")] = None,
        module_dropout: Annotated[Optional[float], typer.Option("--module-dropout", help="Probability of skipping a whole module in a step.", rich_help_panel=P, show_default="0")] = None,
        train_text_encoder: Annotated[Optional[bool], typer.Option("--train-text-encoder/--no-train-text-encoder", help="Also train LoRA on the text encoder(s) (no text caching then).", rich_help_panel=P, show_default=False)] = None,
        network_weights: Annotated[Optional[Path], typer.Option("--network-weights", help="Start from this kohya LoRA file (same rank).", rich_help_panel=P, show_default=False)] = None,
        lr: Annotated[Optional[str], typer.Option("--lr", help="Learning rate; hypernetwork: also an A1111 schedule like '5e-5:100, 5e-6:1500' (wins over --lr-scheduler).", rich_help_panel=O, show_default="1e-4")] = None,
        unet_lr: Annotated[Optional[float], typer.Option("--unet-lr", help="UNet learning rate (default: --lr).", rich_help_panel=O, show_default=False)] = None,
        text_encoder_lr: Annotated[Optional[float], typer.Option("--text-encoder-lr", help="Text-encoder learning rate (default: --lr).", rich_help_panel=O, show_default=False)] = None,
        optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="adamw, adamw8bit, prodigy, lion, adafactor or sgd.", rich_help_panel=O, show_default="adamw")] = None,
        weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="Weight decay.", rich_help_panel=O, show_default="0.01")] = None,
        betas: Annotated[Optional[str], typer.Option("--betas", help="Adam betas, e.g. 0.9,0.999.", rich_help_panel=O, show_default="0.9,0.999")] = None,
        lr_scheduler: Annotated[Optional[str], typer.Option("--lr-scheduler", help="constant, constant_with_warmup, cosine, cosine_with_restarts, linear or polynomial.", rich_help_panel=O, show_default="constant")] = None,
        warmup_steps: Annotated[Optional[int], typer.Option("--warmup-steps", help="LR warmup steps.", rich_help_panel=O, show_default="0")] = None,
        lr_cycles: Annotated[Optional[int], typer.Option("--lr-cycles", help="Restarts for cosine_with_restarts.", rich_help_panel=O, show_default="1")] = None,
        lr_power: Annotated[Optional[float], typer.Option("--lr-power", help="Power for the polynomial schedule.", rich_help_panel=O, show_default="1.0")] = None,
        grad_accum: Annotated[Optional[int], typer.Option("--grad-accum", help="Gradient accumulation steps.", rich_help_panel=O, show_default="1")] = None,
        max_grad_norm: Annotated[Optional[str], typer.Option("--max-grad-norm", help="Gradient clipping threshold (0: off); hypernetwork: also a schedule like '0.1:500, 0.05'.", rich_help_panel=O, show_default="1.0")] = None,
        clip_mode: Annotated[Optional[str], typer.Option("--clip-mode", help="Clip gradients by norm or by value, or disabled.", rich_help_panel=O, show_default="norm")] = None,
        max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps to train (wins over --epochs; default 1600).", rich_help_panel=O, show_default=False)] = None,
        epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs to train.", rich_help_panel=O, show_default=False)] = None,
        noise_offset: Annotated[Optional[float], typer.Option("--noise-offset", help="Noise offset (e.g. 0.05; helps very dark/bright images).", rich_help_panel=O, show_default="0")] = None,
        min_snr_gamma: Annotated[Optional[float], typer.Option("--min-snr-gamma", help="Min-SNR loss weighting gamma (e.g. 5).", rich_help_panel=O, show_default=False)] = None,
        clip_skip: Annotated[Optional[int], typer.Option("--clip-skip", help="Use the N-th text-encoder layer from the end, then its final layer norm (2 for most anime models; SDXL: always the penultimate).", rich_help_panel=O, show_default="1")] = None,
        max_token_length: Annotated[Optional[int], typer.Option("--max-token-length", help="Caption tokens: 75, 150 or 225 (A1111's 77-token chunks).", rich_help_panel=O, show_default="75")] = None,
        prior_loss_weight: Annotated[Optional[float], typer.Option("--prior-loss-weight", help="Loss weight of regularisation images.", rich_help_panel=O, show_default="1.0")] = None,
        resolution: Annotated[Optional[str], typer.Option("--resolution", help="Training resolution N or W,H.", rich_help_panel=D, show_default=False)] = None,
        batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size per device.", rich_help_panel=D, show_default=False)] = None,
        enable_bucket: Annotated[Optional[bool], typer.Option("--bucket/--no-bucket", help="Aspect-ratio buckets.", rich_help_panel=D, show_default=False)] = None,
        keep_tokens: Annotated[Optional[int], typer.Option("--keep-tokens", help="Leading caption tags kept in place when shuffling.", rich_help_panel=D, show_default=False)] = None,
        shuffle_caption: Annotated[Optional[bool], typer.Option("--shuffle-caption/--no-shuffle-caption", help="Shuffle caption tags each step.", rich_help_panel=D, show_default=False)] = None,
        caption_dropout_rate: Annotated[Optional[float], typer.Option("--caption-dropout", help="Probability of an empty caption.", rich_help_panel=D, show_default=False)] = None,
        caption_tag_dropout_rate: Annotated[Optional[float], typer.Option("--tag-dropout", help="Probability of dropping each (non-kept) tag.", rich_help_panel=D, show_default=False)] = None,
        flip_aug: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Random horizontal flips.", rich_help_panel=D, show_default=False)] = None,
        alpha_mask: Annotated[Optional[bool], typer.Option("--alpha-mask/--no-alpha-mask", help="Masked loss from the images' alpha channel.", rich_help_panel=D, show_default=False)] = None,
        mixed_precision: Annotated[Optional[str], typer.Option("--mixed-precision", help="auto (bf16/fp16 on a GPU, no on CPU), no, fp16 or bf16; LoRA weights stay fp32.", rich_help_panel=S, show_default="auto")] = None,
        gradient_checkpointing: Annotated[Optional[bool], typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Trade speed for memory.", rich_help_panel=S, show_default=False)] = None,
        latent_cache: Annotated[Optional[str], typer.Option("--latent-cache", help="disk (reused by later runs), ram, or none.", rich_help_panel=S, show_default="disk")] = None,
        cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the latent cache lives (default: OUTPUT/cache).", rich_help_panel=S, show_default=False)] = None,
        save_precision: Annotated[Optional[str], typer.Option("--save-precision", help="fp16, bf16 or fp32 for the saved file.", rich_help_panel=F, show_default="fp32")] = None,
        save_every: Annotated[Optional[int], typer.Option("--save-every", help="Write a checkpoint every N steps.", rich_help_panel=F, show_default=False)] = None,
        keep_last: Annotated[Optional[int], typer.Option("--keep-last", help="Keep only the newest N checkpoints.", rich_help_panel=F, show_default=False)] = None,
        resume: Annotated[Optional[str], typer.Option("--resume", help="Resume from a checkpoint folder (hypernetwork: any A1111 .pt file), or 'auto' for the newest in OUTPUT/checkpoints (after Ctrl-C the same command continues by itself).", rich_help_panel=F, show_default=False)] = None,
        sample_every: Annotated[Optional[int], typer.Option("--sample-every", help="Render sample images every N steps (and at the end).", rich_help_panel=F, show_default=False)] = None,
        sample_prompts: Annotated[Optional[Path], typer.Option("--sample-prompts", help="Prompt file, kohya syntax (--n --w --h --d --s --l); default: the trigger on several scenes.", rich_help_panel=F, show_default=False)] = None,
        sample_steps: Annotated[Optional[int], typer.Option("--sample-steps", help="Sampling steps per sample image.", rich_help_panel=F, show_default="20")] = None,
        eval_every: Annotated[Optional[int], typer.Option("--eval-every", help="Measure background leakage (as datakit eval) every N steps and at the end: a checkpoint each time, a curve in OUTPUT/eval, the best checkpoint named.", rich_help_panel=F, show_default=False)] = None,
        eval_subject: Annotated[Optional[Path], typer.Option("--eval-subject", help="Folder of the subject's cut-outs, so --eval-every checks the subject is still drawn.", rich_help_panel=F, show_default=False)] = None,
        eval_clip_model: Annotated[Optional[str], typer.Option("--eval-clip-model", help="CLIP model (folder or HF id) for scene agreement and subject presence; default $DATAKIT_CLIP_MODEL.", rich_help_panel=F, show_default=False)] = None,
        eval_prompts: Annotated[Optional[Path], typer.Option("--eval-prompts", help="Scene prompts file for --eval-every (default: datakit eval's built-in scenes).", rich_help_panel=F, show_default=False)] = None,
        eval_seeds: Annotated[Optional[int], typer.Option("--eval-seeds", help="Seeds per scene prompt for --eval-every.", rich_help_panel=F, show_default="2")] = None,
        eval_steps: Annotated[Optional[int], typer.Option("--eval-steps", help="Sampling steps per --eval-every sample.", rich_help_panel=F, show_default="20")] = None,
        eval_batch_size: Annotated[Optional[int], typer.Option("--eval-batch-size", help="Samples drawn at once by --eval-every.", rich_help_panel=F, show_default="4")] = None,
        layer_structure: Annotated[Optional[str], typer.Option("--layer-structure", help="Hidden widths as multiples of the input, e.g. 1,2,1 or 1,2,2,1.", rich_help_panel=H, show_default="1,2,1")] = None,
        activation: Annotated[Optional[str], typer.Option("--activation", help="linear, relu, leakyrelu, elu, swish (Hardswish), tanh, sigmoid, softsign or mish.", rich_help_panel=H, show_default="linear")] = None,
        layer_norm: Annotated[Optional[bool], typer.Option("--layer-norm/--no-layer-norm", help="A LayerNorm after every Linear.", rich_help_panel=H, show_default=False)] = None,
        dropout_structure: Annotated[Optional[str], typer.Option("--dropout-structure", help="Dropout after each layer, one number per --layer-structure entry, e.g. 0,0.3,0 (wins over --dropout).", rich_help_panel=H, show_default=False)] = None,
        activate_output: Annotated[Optional[bool], typer.Option("--activate-output/--no-activate-output", help="Apply the activation after the last Linear too.", rich_help_panel=H, show_default=False)] = None,
        weight_init: Annotated[Optional[str], typer.Option("--weight-init", help="Normal (N(0, 0.01)), XavierUniform, XavierNormal, KaimingUniform or KaimingNormal.", rich_help_panel=H, show_default="Normal")] = None,
        sizes: Annotated[Optional[str], typer.Option("--sizes", help="Context widths to train modules for, e.g. 768,320,640,1280 (default: the model's attention widths).", rich_help_panel=H, show_default=False)] = None,
        strength: Annotated[Optional[float], typer.Option("--strength", help="Hypernetwork strength in sample images (training uses 1).", rich_help_panel=H, show_default="1.0")] = None,
        latent_sampling: Annotated[Optional[str], typer.Option("--latent-sampling", help="once (one VAE sample per image), deterministic (the mean) or random (a new sample each use).", rich_help_panel=H, show_default="once")] = None,
        template: Annotated[Optional[Path], typer.Option("--template", help="Prompt template file, one prompt per line, with [filewords] and [name] (default: the caption).", rich_help_panel=H, show_default=False)] = None,
        cycle_steps: Annotated[Optional[int], typer.Option("--cycle-steps", help="Cosine annealing with warm restarts: steps of the first cycle (turns it on).", rich_help_panel=H, show_default=False)] = None,
        cycle_mult: Annotated[Optional[float], typer.Option("--cycle-mult", help="Each cycle is this many times longer than the one before.", rich_help_panel=H, show_default="1")] = None,
        cycle_warmup: Annotated[Optional[int], typer.Option("--cycle-warmup", help="Linear warmup steps at the start of every cycle.", rich_help_panel=H, show_default="0")] = None,
        min_lr: Annotated[Optional[float], typer.Option("--min-lr", help="Lowest learning rate of each cycle.", rich_help_panel=H, show_default="0")] = None,
        cycle_decay: Annotated[Optional[float], typer.Option("--cycle-decay", help="The peak learning rate is multiplied by this after every cycle.", rich_help_panel=H, show_default="1")] = None,
        seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seed for data order, noise and timesteps.", show_default="0")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (images, buckets, steps, memory and a time estimate timed on this device) and stop.")] = False,
        device: DeviceOpt = "auto",
        force: ForceOpt = False,
        quiet: QuietOpt = False,
        json_mode: JsonOpt = False,
    ) -> None:
        """Train a LoRA (kohya-format .safetensors) or an A1111 hypernetwork (.pt) on a dataset."""
        values = dict(locals())
        for key in ("config", "force", "quiet", "json_mode", "device"):
            values.pop(key)
        device_name = getattr(device, "value", device)
        values["device"] = None if device_name == "auto" else device_name  # so --config may set it
        values["dry_run"] = dry_run or None

        def work(reporter):
            from datakit.train.config import build_config
            from datakit.train.loop import run_train

            cfg = build_config(values, config)
            return run_train(cfg, reporter, force=force)

        execute(work, quiet=quiet, json_mode=json_mode)
