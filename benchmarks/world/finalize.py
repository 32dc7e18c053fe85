"""Turn the pretraining's latest EMA export into the committed world model, and summarise its log.

    .venv/bin/python benchmarks/world/finalize.py [--run pretrain] [--source latest|export|checkpoint]

Takes the EMA weights of the run's newest checkpoint (saved every 200 steps) when it is newer than
its last export (every 1000), so a run stopped between exports loses nothing. Writes benchmarks/world/weights/model/ (the diffusers folder, fp16 safetensors: half the bytes, and
datakit loads it in fp32 as it would any fp16 release) and benchmarks/world/pretrain-log.jsonl (the
mean loss of every 250 steps, then one summary row: steps, wall and CPU hours, parameter counts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world.common import CACHE, WEIGHTS, WORLD  # noqa: E402

EVERY = 250


def summarise_log(run: Path, every: int = EVERY) -> list[dict]:
    """The mean loss of every `every` steps of the run's log (the last row of a step logged twice)."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r for r in rows if "loss" in r]
    # A resumed run logs the steps after its checkpoint again: keep the last row of each step.
    by_step = {r["step"]: r for r in losses}
    steps = sorted(by_step)
    out = []
    for s in steps:
        if s % every == 0:
            window = [by_step[t]["loss"] for t in steps if s - every < t <= s]
            r = by_step[s]
            out.append({"step": s, "loss_mean": round(float(np.mean(window)), 5), "over_steps": every,
                        "wall_hours": r.get("wall_hours"), "cpu_hours": r.get("cpu_hours")})
    return out


def export_checkpoint(run: Path, ckpt: Path, weights: str = "ema") -> Path:
    """Export a checkpoint's EMA (or raw) weights as a diffusers folder (run/export-ckpt), as pretraining exports."""
    from world import checkpoint
    from world.common import setup_torch
    from world.pretrain import export, load_parts

    torch = setup_torch(0)
    vae, tokenizer, text_encoder, unet = load_parts(torch)
    modules = {"te": text_encoder, "unet": unet}
    meta, ema = checkpoint.load(ckpt, modules=modules, optimizer=None)
    if weights == "raw":  # early in a run the EMA still carries the first steps' weights
        ema = {f"{n}.{k}": p.detach() for n, m in modules.items() for k, p in m.named_parameters()}
    folder = run / "export-ckpt"
    export(torch, folder, vae=vae, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, ema=ema,
           step=meta["step"], info={"wall_hours": round(meta.get("elapsed_s", 0.0) / 3600, 3),
                                    "cpu_hours": round(meta.get("cpu_s", 0.0) / 3600, 3), "args": meta.get("args"),
                                    "source": f"{'EMA' if weights == 'ema' else 'raw weights'} of checkpoint {ckpt.name}"})
    return folder


def pick_source(run: Path, source: str, weights: str = "ema") -> Path:
    """The export folder to finalize: the run's export, or its newest checkpoint exported when newer."""
    from world import checkpoint

    export = run / "export"
    ckpt = checkpoint.latest(run / "ckpt")
    export_step = json.loads((export / "world_pretrain.json").read_text())["step"] if export.is_dir() else -1
    ckpt_step = int(ckpt.name.removeprefix(checkpoint.PREFIX)) if ckpt is not None else -1
    if source == "checkpoint" or weights == "raw" or (source == "latest" and ckpt_step > export_step):
        if ckpt is None:
            sys.exit(f"no checkpoint under {run / 'ckpt'}")
        return export_checkpoint(run, ckpt, weights)
    if export_step < 0:
        sys.exit(f"no export under {export}")
    return export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="pretrain")
    ap.add_argument("--source", choices=("latest", "export", "checkpoint"), default="latest",
                    help="latest: the newer of the export and the newest checkpoint's EMA")
    ap.add_argument("--weights", choices=("ema", "raw"), default="ema",
                    help="the EMA (what pretraining exports) or the raw weights of the newest checkpoint")
    ap.add_argument("--dest", type=Path, default=WEIGHTS / "model", help="where the model folder goes")
    args = ap.parse_args()
    import torch
    from diffusers import StableDiffusionPipeline

    run = CACHE / args.run
    export = pick_source(run, args.source, args.weights)
    info = json.loads((export / "world_pretrain.json").read_text())
    pipe = StableDiffusionPipeline.from_pretrained(str(export), safety_checker=None, requires_safety_checker=False)
    tuned = CACHE / "vae-decoder" / "final"
    if tuned.is_dir():  # the fine-tuned decoder (same encoder, so the same latent space the UNet learnt)
        from diffusers import AutoencoderKL

        pipe.vae = AutoencoderKL.from_pretrained(str(tuned))
        info["vae_decoder"] = "fine-tuned (train_vae.py --decoder-only)"
    pipe.to(torch.float16)
    dest = args.dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    # transformers 5 saves only tokenizer.json; tools on older transformers read CLIP's vocab.json + merges.txt.
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(CACHE / "tokenizer" / name, tmp / "tokenizer" / name)
    count = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "text_encoder", "vae")}
    (tmp / "world_pretrain.json").write_text(json.dumps({**info, "parameters": count}, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    if dest.resolve() != (WEIGHTS / "model").resolve():
        print(f"{dest}: step {info['step']} ({info.get('source', 'export')})")
        return  # a trial export: the committed log summary stays
    rows = summarise_log(run)
    vae_final = [json.loads(x) for name in ("vae", "vae-decoder") if (CACHE / name / "log.jsonl").is_file()
                 for x in (CACHE / name / "log.jsonl").read_text().splitlines() if '"final"' in x]
    summary = {"summary": True, "steps": info["step"], "weights": info.get("source", "EMA export"), "wall_hours": info.get("wall_hours"),
               "cpu_hours": info.get("cpu_hours"), "parameters": count, "args": info.get("args"),
               "vae": vae_final}
    (WORLD / "pretrain-log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, summary]))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
