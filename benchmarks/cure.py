"""The cure, measured: does datakit's composite pipeline stop a LoRA from leaking its white background?

A miniature world stands in for Stable Diffusion (no real weights can be fetched here): a small
SD1-layout text-to-image model pretrained on 64 px pictures of ten scenes, its own tiny CLIP, and a
scene classifier, all committed under benchmarks/world/weights/ (see benchmarks/world/README.md).
Its new mascot `zubi` was never in pretraining: five drawings on white.

Two LoRAs are trained through the real `datakit` commands, with the same flags, steps and seed:
  A  the drawings only (what a user has):       tags rewrite -> emit -> train
  B  datakit's cure:  cutout -> composite (onto world scenes given as a --backgrounds folder)
                      -> tags rewrite -> emit -> train     (drawings + composites)
The reference a user would really run instead is A: training on the drawings as they are.
Then `datakit eval` samples the base model, A and B on the world's scene prompts with the world's
CLIP as --clip-model, and this script prints (and writes to benchmarks/results/cure.json) the
table: white rate, plain rate, scene agreement and mascot presence on the scenes the composites
covered and on scenes held out of them, over 2 seeds. Two model-free cross-checks sit beside
datakit eval's columns: the world's scene classifier on the same samples, and the share of
samples showing zubi's magenta (a colour nothing else in the world has).

    .venv/bin/python benchmarks/cure.py [--quick] [--steps 500] [--seeds 2] [--gate-samples 10] [--work build/cure]

Before anything it measures the world model's quality gates (benchmarks/world/gates.py), here on 10
samples per scene (gates.py's own default, 20, is what weights/gates.json holds).

Settings, chosen to keep the run small on 2 CPU cores (about 10-15 minutes, one torch thread per
command): both LoRAs rank 8 (alpha 8) on kohya's targets plus rank-8 3x3 convs, AdamW at 1e-3,
batch 4, 64 px, 500 steps, seed 0; 100 composites onto 20 backgrounds of each covered scene; eval
with datakit eval's defaults (25 Euler steps, guidance 7) on 9 scene prompts + the plain prompt, 2
seeds. `--quick`: 20 steps, 1 seed, 3 gate samples, written to results/quick/ (never the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import Results, Row, machine, print_rows, write_results  # noqa: E402
from world.common import WEIGHTS  # noqa: E402
from world.judge import SCENE_PROMPTS  # noqa: E402
from world.mascot import TRIGGER, magenta_share, write_drawings  # noqa: E402
from world.pictures import draw_background  # noqa: E402
from world.scenes import SCENE_BY_NAME  # noqa: E402

MODEL = WEIGHTS / "model"
CLIP = WEIGHTS / "clip"
RULES = ROOT / "benchmarks" / "world" / "rules.toml"
# Composites use these scenes; the other scene prompts are held out of them (never composited).
COVERED = ("beach", "forest", "city", "snow", "room")
HELD_OUT = ("night", "grass", "underwater", "desert")
BACKGROUNDS_PER_SCENE = 20
BACKGROUND_SEED = 4321  # not the pretraining seed: backgrounds the model never saw
MAGENTA_PRESENT = 0.02  # share of magenta pixels above which zubi counts as drawn (the world itself has none)
# The goal: A leaks (white on >= 50% of scene prompts), B does not (<= 10%) and still draws zubi.
A_LEAKS, B_CURED, PRESENT = 0.5, 0.1, 0.5

# The LoRA both runs train: rank 8 on every kohya target, plus 3x3 convs (LoCon) at rank 8.
TRAIN_FLAGS = ["--rank", "8", "--alpha", "8", "--conv-rank", "8", "--conv-alpha", "8", "--lr", "1e-3",
               "--batch-size", "4", "--resolution", "64", "--no-bucket", "--latent-cache", "ram"]


def datakit_bin() -> str:
    exe = Path(sys.executable).parent / "datakit"
    return str(exe) if exe.is_file() else "datakit"


def run(cmd: list[str], log: Path, *, ok=(0, 3)) -> dict:
    """Run one datakit command, its output in `log`; stop the benchmark with the log's tail if it fails.

    Returns its wall and CPU seconds. One torch thread by default (OMP_NUM_THREADS overrides): on a
    busy shared CPU a second thread mostly waits on the first.
    """
    shown = " ".join(str(c) for c in cmd).replace(str(ROOT) + "/", "")
    print(f"$ {shown}", flush=True)
    t0, c0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.run([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if rc not in ok:
        print(log.read_text(encoding="utf-8")[-3000:])
        sys.exit(f"cure: `{shown}` failed with exit status {rc} (log: {log})")
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.time() - t0, 1), "cpu_s": round(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime, 1)}


def write_inputs(work: Path) -> dict[str, Path]:
    """The drawings, the background folder (covered scenes only) and the eval prompt file."""
    drawings = work / "drawings"
    write_drawings(drawings)
    bg = work / "backgrounds"
    bg.mkdir(parents=True, exist_ok=True)
    for scene in COVERED:
        for i in range(BACKGROUNDS_PER_SCENE):
            img, _ = draw_background(BACKGROUND_SEED, i, scene)
            img.save(bg / f"{scene}_{i:02d}.png")
            (bg / f"{scene}_{i:02d}.txt").write_text(", ".join(SCENE_BY_NAME[scene].tags) + "\n", encoding="utf-8")
    prompts = work / "scenes.txt"
    lines = ["# the world's scene prompts: scene text | name (datakit eval puts the trigger first)"]
    lines += [f"{SCENE_PROMPTS[s]} | {s}" for s in (*COVERED, *HELD_OUT)]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"drawings": drawings, "backgrounds": bg, "prompts": prompts}


def pipeline(work: Path, inputs: dict[str, Path], steps: int, seed: int) -> dict:
    """Both runs through the real commands; returns {'A': lora, 'B': lora, 'timings': {...}}."""
    dk = datakit_bin()
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    t: dict[str, dict] = {}
    t["tags rewrite (drawings)"] = run([dk, "tags", "rewrite", inputs["drawings"], work / "originals", "--rules", RULES],
                                       logs / "rewrite-originals.log")
    # A: the drawings only.
    t["A emit"] = run([dk, "emit", work / "A" / "dataset", "--concept", f"{TRIGGER}={work / 'originals'}"], logs / "A-emit.log")
    # B: cut out, composite onto the covered scenes, rewrite, emit drawings + composites.
    t["B cutout"] = run([dk, "cutout", inputs["drawings"], work / "B" / "cutout"], logs / "B-cutout.log")
    n_bg = len(COVERED) * BACKGROUNDS_PER_SCENE
    t["B composite"] = run([dk, "composite", work / "B" / "cutout", work / "B" / "composite", "--backgrounds",
                            inputs["backgrounds"], "--bg-count", str(n_bg), "--seed", str(seed)], logs / "B-composite.log")
    t["B tags rewrite"] = run([dk, "tags", "rewrite", work / "B" / "composite", work / "B" / "composite-rewritten",
                               "--rules", RULES], logs / "B-rewrite.log")
    t["B emit"] = run([dk, "emit", work / "B" / "dataset", "--concept", f"{TRIGGER}={work / 'originals'}",
                       "--concept", f"{TRIGGER}_with_background={work / 'B' / 'composite-rewritten'}"], logs / "B-emit.log")
    loras = {}
    for name in ("A", "B"):
        out = work / name / "lora"
        t[f"{name} train"] = run([dk, "train", work / name / "dataset", "--base-model", MODEL, "--method", "lora",
                                  "--output", out, "--max-steps", str(steps), "--seed", str(seed), *TRAIN_FLAGS],
                                 logs / f"{name}-train.log")
        files = sorted(out.glob("*.safetensors"))
        if not files:
            sys.exit(f"cure: datakit train wrote no LoRA into {out}")
        loras[name] = files[0]
    return {**loras, "timings": t}


def evaluate(work: Path, inputs: dict[str, Path], loras: dict, seeds: int, seed: int) -> tuple[Path, dict]:
    """`datakit eval` on the base model, A and B with the world's CLIP; returns the eval folder and its timing."""
    out = work / "eval"
    # Eval names each adapter after its file: give them the run's name so the table says A and B.
    named = {}
    for name, lora in loras.items():
        dest = work / "adapters" / f"{name}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lora, dest)
        named[name] = dest
    cmd = [datakit_bin(), "eval", "--base-model", MODEL, "--output", out, "--subject", work / "B" / "cutout",
           "--prompts", inputs["prompts"], "--seeds", str(seeds), "--seed", str(seed), "--clip-model", CLIP,
           "--batch-size", "8"]
    for dest in named.values():
        cmd += ["--adapter", dest]
    return out, run(cmd, work / "logs" / "eval.log")


def sample_files(eval_dir: Path) -> dict[str, str]:
    """key -> image file of every sample eval drew: eval.json's `file` where set, else its manifest row's."""
    files = {}
    manifest = eval_dir / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("key") and row.get("file"):
                files[row["key"]] = row["file"]
    return files


def sample_image(eval_dir: Path, file: str | None):
    """The uint8 image eval wrote for one of its samples, or None."""
    import numpy as np
    from PIL import Image

    if not file or not (eval_dir / file).is_file():
        return None
    with Image.open(eval_dir / file) as im:
        return np.asarray(im.convert("RGB"))


def table(eval_dir: Path) -> dict:
    """Per model x scene group (covered, held out, plain): eval's rates plus the two world cross-checks."""
    import numpy as np

    from world.train_classifier import classify, load_classifier

    data = json.loads((eval_dir / "eval.json").read_text(encoding="utf-8"))
    files = sample_files(eval_dir)
    clf, names = load_classifier()
    groups = {"covered": set(COVERED), "held out": set(HELD_OUT), "plain": {"plain"}}
    models = [m["label"] for m in data["models"]]
    out: dict[str, dict] = {}
    for model in models:
        out[model] = {}
        for group, scenes in groups.items():
            rows = [s for s in data["samples"] if s["model"] == model and s["scene"] in scenes]
            if not rows:
                continue

            def rate(field):
                vals = [r.get(field) for r in rows if r.get(field) is not None]
                return round(float(np.mean([float(v) for v in vals])), 3) if vals else None

            found = [(r, sample_image(eval_dir, r.get("file") or files.get(r["key"]))) for r in rows]
            found = [(r, p) for r, p in found if p is not None]
            pics = [p for _, p in found]
            world_scene = None
            if group != "plain" and pics:
                pred = classify(clf, np.stack(pics))
                truth = [r["scene"] for r, _ in found]
                world_scene = round(float(np.mean([names[p] == t for p, t in zip(pred, truth)])), 3)
            out[model][group] = {
                "samples": len(rows),
                "white_rate": rate("white"),
                "plain_rate": rate("plain"),
                "scene_agreement": rate("scene_agrees"),
                "mascot_presence": rate("subject_present"),
                "mascot_presence_colour": rate("colour_present"),
                "world_classifier_agrees": world_scene,
                "magenta_present": round(float(np.mean([magenta_share(p) >= MAGENTA_PRESENT for p in pics])), 3)
                if pics else None,
            }
    return out


def print_table(result: dict) -> None:
    cols = [("white_rate", "white"), ("plain_rate", "plain"), ("scene_agreement", "scene (CLIP)"),
            ("mascot_presence", "mascot (CLIP)"), ("world_classifier_agrees", "scene (classifier)"),
            ("magenta_present", "mascot (magenta)")]
    head = f"{'model':<6} {'scenes':<9} {'n':>3} " + " ".join(f"{label:>18}" for _, label in cols)
    print(head)
    print("-" * len(head))
    for model, groups in result.items():
        for group, row in groups.items():
            cells = []
            for key, _ in cols:
                v = row.get(key)
                cells.append(f"{'-' if v is None else f'{v:.2f}':>18}")
            print(f"{model:<6} {group:<9} {row['samples']:>3} " + " ".join(cells))


def gates(work: Path, samples: int) -> dict:
    """Measure the world model's quality gates first (gates.py), print them, return its JSON."""
    dest = work / "gates.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "world" / "gates.py"), "--model", str(MODEL), "--json", str(dest),
           "--samples", str(samples)]
    print("$ " + " ".join(cmd).replace(str(ROOT) + "/", ""), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    result = json.loads(dest.read_text(encoding="utf-8"))
    result["passed"] = rc == 0
    return result


def fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def readme_rows(result: dict, gate: dict | None, world_step) -> list[Row]:
    """The README lines: per scene group, B (datakit's cure) against A (the drawings as they are)."""
    rows = []
    for group in ("covered", "held out"):
        a, b, base = (result.get(m, {}).get(group, {}) for m in ("A", "B", "base"))
        if not a or not b:
            continue

        def cells(r):
            return (f"white {fmt(r.get('white_rate'))}, plain {fmt(r.get('plain_rate'))}, "
                    f"scene {fmt(r.get('scene_agreement'))}, mascot {fmt(r.get('mascot_presence'))} "
                    f"(magenta {fmt(r.get('magenta_present'))})")

        a_white, b_white = a.get("white_rate"), b.get("white_rate")
        present = b.get("magenta_present")
        met = None if a_white is None or b_white is None or present is None else bool(
            a_white >= A_LEAKS and b_white <= B_CURED and present >= PRESENT)
        scenes = ", ".join(COVERED if group == "covered" else HELD_OUT)
        rows.append(Row(
            case=f"LoRA on zubi, scenes {'covered by' if group == 'covered' else 'held out of'} the composites ({scenes}); "
                 f"{b['samples']} samples",
            datakit=f"B (cutout -> composite -> tags rewrite -> emit -> train): {cells(b)}",
            baseline=f"A (the 5 drawings on white): {cells(a)}; base model: white {fmt(base.get('white_rate'))}, "
                     f"scene {fmt(base.get('scene_agreement'))}",
            goal=f"A white >= {A_LEAKS:.0%}, B white <= {B_CURED:.0%}, B mascot (magenta) >= {PRESENT:.0%}",
            result=f"white {fmt(a_white)} -> {fmt(b_white)}", met=met))
    if gate is not None:
        rows.append(Row(
            case=f"the world model's quality gates (pretraining step {world_step})",
            datakit=f"'white background' prompts white {gate['white_rate_on_white_prompts']:.0%}, "
                    f"prompted scene recognised {gate['scene_accuracy']:.0%}",
            baseline="-", goal=f">= {gate['white_gate']:.0%} and >= {gate['scene_gate']:.0%}",
            result="pass" if gate["passed"] else "fail", met=bool(gate["passed"])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, 1 seed, 3 gate samples (results/quick/)")
    ap.add_argument("--steps", type=int, default=None, help="training steps of both LoRAs (default 500; quick 20)")
    ap.add_argument("--seeds", type=int, default=None, help="eval samples per prompt and model (default 2; quick 1)")
    ap.add_argument("--gate-samples", type=int, default=None, help="gate samples per scene (default 10; quick 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "cure")
    ap.add_argument("--skip-gates", action="store_true", help="do not re-measure the world model's gates")
    args = ap.parse_args()
    args.steps = args.steps or (20 if args.quick else 500)
    args.seeds = args.seeds or (1 if args.quick else 2)
    args.gate_samples = args.gate_samples or (3 if args.quick else 10)
    if not (MODEL / "model_index.json").is_file() or not (CLIP / "config.json").is_file():
        sys.exit(f"cure: the world model is missing under {WEIGHTS}; see benchmarks/world/README.md to build it")
    world = json.loads((MODEL / "world_pretrain.json").read_text(encoding="utf-8"))
    started, m0 = time.perf_counter(), machine()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    gate = None if args.skip_gates else gates(args.work, args.gate_samples)
    inputs = write_inputs(args.work)
    runs = pipeline(args.work, inputs, args.steps, args.seed)
    eval_dir, runs["timings"]["eval"] = evaluate(args.work, inputs, {"A": runs["A"], "B": runs["B"]}, args.seeds, args.seed)
    result = table(eval_dir)
    print()
    print_table(result)
    print()
    rows = readme_rows(result, gate, world.get("step"))
    print_rows(rows)
    settings = {
        "world_model": str(MODEL.relative_to(ROOT)), "pretraining_step": world.get("step"),
        "pretraining_cpu_hours": world.get("cpu_hours"), "pretraining_weights": world.get("source", "EMA export"), "clip": str(CLIP.relative_to(ROOT)),
        "covered_scenes": list(COVERED), "held_out_scenes": list(HELD_OUT),
        "backgrounds": len(COVERED) * BACKGROUNDS_PER_SCENE, "train_steps": args.steps, "seed": args.seed,
        "train_flags": TRAIN_FLAGS, "eval_seeds": args.seeds, "gate_samples_per_scene": args.gate_samples,
        "eval": "datakit eval defaults: 25 Euler steps, guidance 7, 64 px",
        "torch_threads_per_command": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    notes = [
        "The miniature world (benchmarks/world/) stands in for Stable Diffusion: a 3.2M-parameter SD1-layout UNet "
        f"pretrained {world.get('step')} steps on 64 px pictures of 10 scenes, its own CLIP and scene classifier.",
        "scene = datakit eval's scene_agreement (the world's CLIP); mascot = subject_presence (CLIP, against the base "
        "model's sample); magenta = share of samples showing zubi's body colour, which nothing else in the world has.",
    ]
    write_results(Results(benchmark="cure", title=TITLE, settings=settings, rows=rows,
                          measurements={"table": result, "gates": gate,
                                        "timings": runs["timings"]},
                          notes=notes, quick=args.quick), started=started, machine_at_start=m0)


TITLE = "The cure: a LoRA trained on drawings on white (A) vs on datakit's composites (B), measured by datakit eval"


if __name__ == "__main__":
    main()
