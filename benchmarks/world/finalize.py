"""Turn the pretraining's latest EMA export into the committed world model, and summarise its log.

    .venv/bin/python benchmarks/world/finalize.py [--run pretrain]

Writes benchmarks/world/weights/model/ (the diffusers folder, fp16 safetensors: half the bytes, and
datakit loads it in fp32 as it would any fp16 release) and benchmarks/world/pretrain-log.jsonl (the
loss every 250 steps, then one summary row: steps, wall and CPU hours, parameter counts).
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


def summarise_log(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r for r in rows if "loss" in r]
    # A resumed run logs the steps after its checkpoint again: keep the last row of each step.
    by_step = {r["step"]: r for r in losses}
    steps = sorted(by_step)
    out = []
    for s in steps:
        if s % EVERY == 0:
            window = [by_step[t]["loss"] for t in steps if s - EVERY < t <= s]
            r = by_step[s]
            out.append({"step": s, "loss_mean_last_250": round(float(np.mean(window)), 5),
                        "wall_hours": r.get("wall_hours"), "cpu_hours": r.get("cpu_hours")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="pretrain")
    args = ap.parse_args()
    import torch
    from diffusers import StableDiffusionPipeline

    run = CACHE / args.run
    export = run / "export"
    info = json.loads((export / "world_pretrain.json").read_text())
    pipe = StableDiffusionPipeline.from_pretrained(str(export), safety_checker=None, requires_safety_checker=False)
    tuned = CACHE / "vae-decoder" / "final"
    if tuned.is_dir():  # the fine-tuned decoder (same encoder, so the same latent space the UNet learnt)
        from diffusers import AutoencoderKL

        pipe.vae = AutoencoderKL.from_pretrained(str(tuned))
        info["vae_decoder"] = "fine-tuned (train_vae.py --decoder-only)"
    pipe.to(torch.float16)
    dest = WEIGHTS / "model"
    tmp = dest.with_name("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    count = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "text_encoder", "vae")}
    (tmp / "world_pretrain.json").write_text(json.dumps({**info, "parameters": count}, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    rows = summarise_log(run)
    vae_final = [json.loads(x) for name in ("vae", "vae-decoder") if (CACHE / name / "log.jsonl").is_file()
                 for x in (CACHE / name / "log.jsonl").read_text().splitlines() if '"final"' in x]
    summary = {"summary": True, "steps": info["step"], "wall_hours": info.get("wall_hours"),
               "cpu_hours": info.get("cpu_hours"), "parameters": count, "args": info.get("args"),
               "vae": vae_final}
    (WORLD / "pretrain-log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, summary]))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
