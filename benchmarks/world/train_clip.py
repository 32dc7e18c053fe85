"""Train the world's CLIP: a tiny `CLIPModel` (ViT + text transformer) learnt contrastively on pictures and captions.

    .venv/bin/python benchmarks/world/train_clip.py [--steps 1500] [--batch 64]

Saved with `save_pretrained` (safetensors) together with a `CLIPProcessor` (image processor at the
world's 64 px + the world's tokenizer) in benchmarks/world/weights/clip/, so `datakit eval
--clip-model` loads it through transformers' own code path, as it would load openai/clip-vit-*.

Loss: CLIP's symmetric InfoNCE with a learnt temperature. Captions are the training captions
(shuffled, some tags dropped, never empty). Resumable (build/world/clip/ckpt) and deterministic per
device. At the end it reports zero-shot scene accuracy and picture -> caption retrieval on the
held-out pictures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world import checkpoint  # noqa: E402
from world.common import CACHE, WEIGHTS, log, picture_set, setup_torch  # noqa: E402
from world.judge import SCENE_PROMPTS  # noqa: E402
from world.models import count_parameters, text_config  # noqa: E402
from world.pictures import Item, training_caption  # noqa: E402

OUT = WEIGHTS / "clip"
MEAN = [0.48145466, 0.4578275, 0.40821073]  # CLIP's image normalisation (CLIPImageProcessor's defaults)
STD = [0.26862954, 0.26130258, 0.27577711]


def build(tokenizer):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(image_size=64, patch_size=8, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                              num_attention_heads=4, projection_dim=64, hidden_act="quick_gelu")
    cfg = CLIPConfig(text_config=text_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=64)
    return CLIPModel(cfg)


def processor(tokenizer):
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                         image_mean=MEAN, image_std=STD)
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def pixels(torch, batch: np.ndarray):
    """uint8 N x 64 x 64 x 3 -> CLIP-normalised pixel_values, exactly what the processor gives at 64 px."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def embedding(out):
    """get_*_features' result as a tensor: transformers 5 returns an output whose pooler_output is projected."""
    return out if hasattr(out, "norm") else out.pooler_output


def evaluate(torch, model, tokenizer, images: np.ndarray, items: list[dict]) -> dict:
    """Zero-shot scene accuracy (SCENE_PROMPTS) and picture->caption retrieval top-1 among groups of 100."""
    model.eval()
    with torch.no_grad():
        ids = tokenizer(list(SCENE_PROMPTS.values()), padding="max_length", max_length=77, return_tensors="pt").input_ids
        scene_emb = torch.nn.functional.normalize(embedding(model.get_text_features(input_ids=ids)), dim=-1)
        correct, hits, total = 0, 0, 0
        names = list(SCENE_PROMPTS)
        for i in range(0, len(items) - 99, 100):
            img = torch.nn.functional.normalize(embedding(model.get_image_features(pixel_values=pixels(torch, images[i:i + 100]))), dim=-1)
            caps = [Item(None, it["scene"], it["objects"]).caption for it in items[i:i + 100]]
            cid = tokenizer(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            txt = torch.nn.functional.normalize(embedding(model.get_text_features(input_ids=cid)), dim=-1)
            pred = (img @ scene_emb.T).argmax(1).numpy()
            correct += sum(names[p] == it["scene"] for p, it in zip(pred, items[i:i + 100]))
            hits += int(((img @ txt.T).argmax(1) == torch.arange(100)).sum())
            total += 100
    model.train()
    return {"zero_shot_scene_accuracy": round(correct / total, 4), "retrieval_top1_of_100": round(hits / total, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch = setup_torch(args.seed)
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(CACHE / "tokenizer"))
    images, items = picture_set("train")
    model = build(tokenizer)
    print(f"CLIP: {count_parameters(model):,} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.98))
    run = CACHE / "clip"
    meta, _ = checkpoint.resume(run / "ckpt", modules={"clip": model}, optimizer=opt)
    start, elapsed = meta["step"], meta.get("elapsed_s", 0.0)
    model.train()
    t_last = time.time()
    for step in range(start, args.steps):
        warm = min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm * 0.5 * (1 + np.cos(np.pi * step / args.steps))
        rng = np.random.default_rng([args.seed, step])
        idx = np.sort(rng.choice(len(items), size=args.batch, replace=False))
        caps = [training_caption(Item(None, items[i]["scene"], items[i]["objects"]), rng, empty_rate=0.0) for i in idx]
        ids = tokenizer(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        out = model(input_ids=ids, pixel_values=pixels(torch, images[idx]), return_loss=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100.0))
        now = time.time()
        elapsed += now - t_last
        t_last = now
        if step % 50 == 0:
            log(run / "log.jsonl", step=step, loss=round(out.loss.item(), 4), hours=round(elapsed / 3600, 3))
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            checkpoint.save(run / "ckpt", step + 1, modules={"clip": model}, ema=None, optimizer=opt,
                            extra={"elapsed_s": elapsed, "args": vars(args)})
    held, held_items = picture_set("heldout")
    scores = evaluate(torch, model, tokenizer, held, held_items)
    tmp = OUT.with_name("clip.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    processor(tokenizer).save_pretrained(str(tmp))
    (tmp / "world_clip.json").write_text(json.dumps({**scores, "steps": args.steps, "hours": round(elapsed / 3600, 3),
                                                     "parameters": count_parameters(model)}, indent=1))
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    log(run / "log.jsonl", final=True, **scores)


if __name__ == "__main__":
    main()
