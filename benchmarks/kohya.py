"""The same LoRA trained by kohya sd-scripts' train_network.py and by `datakit train`, runs alternating.

Reference: kohya-ss/sd-scripts at commit 48d368f, `train_network.py` (NetworkTrainer.train), run as a
user runs it: `python train_network.py --dataset_config dataset.toml --network_module networks.lora
--cache_latents --sdpa ...` with its default optimizer (AdamW), scheduler (constant), data-loader
workers (min(8, cores)), in-memory latent cache, fp32 on the CPU (`--mixed_precision no`).
datakit: the `datakit train` command with its defaults (latent cache on disk, in a fresh output folder).

Both get, in the same run and taking turns (kohya, datakit, then datakit, kohya, ...):
- the same dataset: datakit's own pipeline (cutout -> composite over procedural backgrounds -> tags
  rewrite -> emit) on samples/subjects, i.e. the `make demo` output, emitted at the benchmark's
  resolution and batch size; kohya reads emit's dataset.toml;
- the same model: a full-size SD1.5 with random weights built from datakit/models/configs/sd1, saved
  as a diffusers folder, with a tiny byte-level CLIP tokenizer of ours (kohya reads it through
  --tokenizer_cache_dir, so it never reaches for the network);
- the same LoRA: UNet only (kohya --network_train_unet_only; datakit's default), equal rank, alpha,
  learning rate, resolution, batch size, steps, seed, fp16 saving.

Reported for each: the median optimizer-step time after the first step, the whole run (process start
to exit: imports, model load, latent caching, steps, saving), CPU seconds, peak RSS, time to the
first step and the time spent inside the VAE encoder before it (caching); and whether the two
.safetensors files have identical keys, shapes and alphas. The step times come from torch's global
optimizer-step hook installed by `harness.py --steps-to`, so neither trainer's code is touched.

Goals (issue 15): on the CPU, the whole run at least 2x faster than kohya's and no step slower (a
median step within 5% of kohya's counts as not slower); on a GPU (`--gpu`: SD1.5 at 512 px, bf16),
at least 1.5x kohya's steps/s at no more GPU memory.

Setting up kohya (outside this repository; nothing of it is installed or vendored here):
  KOHYA_SD_SCRIPTS  a checkout of kohya-ss/sd-scripts (commit 48d368f or newer)
  KOHYA_PYTHON      the python of a virtual environment with sd-scripts' requirements.txt installed
                    (torch as you use it; bitsandbytes and xformers are not needed here); default:
                    $KOHYA_SD_SCRIPTS/venv/bin/python, else `python`. sd-scripts imports a few
                    torchvision transforms: that venv needs torchvision, or a stand-in providing
                    `transforms.Compose/ToTensor/Normalize` and `transforms.functional.pil_to_tensor`.

    KOHYA_SD_SCRIPTS=~/sd-scripts KOHYA_PYTHON=~/sd-scripts/venv/bin/python \\
        .venv/bin/python benchmarks/kohya.py [--quick] [--rounds 2] [--steps 5] [--gpu]

Without KOHYA_SD_SCRIPTS it says so and exits 0 (so `make bench` runs where kohya is not installed).
The model (about 4 GB) and the dataset are built once under --work (default: the system temp folder)
and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Results, Row, machine, median, print_rows, run_child, write_results  # noqa: E402

TOKENIZER_ID = "openai/clip-vit-large-patch14"  # the id kohya asks for; --tokenizer_cache_dir maps it to a folder
NOT_SLOWER = 1.05  # a median step within 5% of kohya's is "not slower" (run-to-run noise on a shared machine)


# ---- the model and the dataset, built once ---------------------------------------------------------

def build_model(dest: Path, seed: int = 0) -> Path:
    """A full-size SD1.5 (UNet, VAE, CLIP text encoder from the shipped configs), random weights, fp32."""
    if (dest / "model_index.json").is_file():
        return dest
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from datakit.models.diffusion import CONFIG_ROOT
    from datakit.testing import write_tiny_clip_tokenizer

    cfg = CONFIG_ROOT / "sd1"
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(cfg / "unet")))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(cfg / "vae")))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(cfg / "text_encoder")))
    tok = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(tmp / "tokenizer")))
    sched = DDIMScheduler.from_config(DDIMScheduler.load_config(str(cfg / "scheduler")))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    tmp.rename(dest)
    return dest


def tokenizer_cache(work: Path, model: Path) -> Path:
    """kohya's --tokenizer_cache_dir: our tokenizer under the name kohya looks up."""
    folder = work / "tokenizer_cache"
    target = folder / TOKENIZER_ID.replace("/", "_")
    if not (target / "vocab.json").is_file():
        shutil.copytree(model / "tokenizer", target, dirs_exist_ok=True)
    return folder


def build_dataset(work: Path, resolution: int, batch: int, bg_count: int) -> Path:
    """The demo pipeline's output (samples/subjects -> ... -> emit) at this resolution and batch size."""
    out = work / f"pipeline-bg{bg_count}"
    dataset = out / f"dataset-{resolution}px-b{batch}"
    if (dataset / "datakit.json").is_file():
        return dataset
    datakit_bin = str(Path(sys.executable).with_name("datakit"))
    # The pipeline up to the rewritten captions, then our own emit with this size (the pipeline's emit
    # target would use its defaults).
    subprocess.run(["make", "-s", "-f", "pipelines/pipeline.mk", f"DATAKIT={datakit_bin}", f"OUT={out}",
                    f"BG_COUNT={bg_count}", f"{out}/originals-rewritten/datakit.json",
                    f"{out}/composite-rewritten/datakit.json"], cwd=ROOT, check=True)
    subprocess.run([datakit_bin, "emit", str(dataset), "--concept", f"sail_kun={out}/originals-rewritten",
                    "--concept", f"sail_kun_with_background={out}/composite-rewritten", "--resolution", str(resolution),
                    "--batch-size", str(batch), "--quiet"], cwd=ROOT, check=True)
    return dataset


# ---- the two commands ------------------------------------------------------------------------------

def kohya_python(scripts: Path) -> str:
    if os.environ.get("KOHYA_PYTHON"):
        return os.environ["KOHYA_PYTHON"]
    venv = scripts / "venv" / "bin" / "python"
    return str(venv) if venv.exists() else "python"


def kohya_command(a, scripts: Path, model: Path, dataset: Path, tok_cache: Path, out: Path, clock: Path) -> list[str]:
    cmd = [kohya_python(scripts), str(HERE / "harness.py"), "--steps-to", str(clock), "--",
           str(scripts / "train_network.py"),
           "--pretrained_model_name_or_path", str(model), "--dataset_config", str(dataset / "dataset.toml"),
           "--output_dir", str(out), "--output_name", "lora", "--save_model_as", "safetensors",
           "--network_module", "networks.lora", "--network_dim", str(a.rank), "--network_alpha", str(a.alpha),
           "--network_train_unet_only", "--learning_rate", str(a.lr), "--max_train_steps", str(a.steps),
           "--train_batch_size", str(a.batch), "--resolution", str(a.resolution), "--seed", str(a.seed),
           "--cache_latents", "--sdpa", "--mixed_precision", a.precision, "--save_precision", "fp16",
           "--tokenizer_cache_dir", str(tok_cache)]
    return cmd


def datakit_command(a, model: Path, dataset: Path, out: Path, clock: Path) -> list[str]:
    return [sys.executable, str(HERE / "harness.py"), "--steps-to", str(clock), "--", "-m", "datakit", "train",
            str(dataset), "--base-model", str(model), "--method", "lora", "--output", str(out), "--output-name", "lora",
            "--rank", str(a.rank), "--alpha", str(a.alpha), "--lr", str(a.lr), "--max-steps", str(a.steps),
            "--batch-size", str(a.batch), "--resolution", str(a.resolution), "--seed", str(a.seed),
            "--mixed-precision", a.precision, "--save-precision", "fp16", "--device", a.device, "--quiet"]


def run_one(name: str, cmd: list[str], out: Path, clock: Path, env: dict, cwd: Path, timeout: float) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    clock.unlink(missing_ok=True)
    log = out.parent / f"{out.name}.log"
    child = run_child(cmd, env=env, cwd=cwd, timeout=timeout, log=log)
    if child.returncode != 0:
        tail = (child.stdout + child.stderr)[-4000:]
        raise SystemExit(f"{name} failed (exit {child.returncode}; log {log}):\n{tail}")
    steps = json.loads(clock.read_text()) if clock.is_file() else {}
    result = {"wall_s": round(child.wall_s, 2), "cpu_s": round(child.cpu_s, 2), "peak_rss_gb": round(child.peak_rss_gb, 2),
              **steps, "file": str(out / "lora.safetensors")}
    print(f"  {name}: whole run {result['wall_s']:.1f} s, CPU {result['cpu_s']:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB, "
          f"first step at {result.get('first_step_s')} s, median step {result.get('median_step_s')} s, "
          f"VAE encoder {result.get('vae_encoder_s')} s in {result.get('vae_encoder_calls')} calls", flush=True)
    return result


# ---- the files ---------------------------------------------------------------------------------------

def compare_files(ours: Path, theirs: Path) -> dict:
    """Same keys, same shapes, same alpha values (the weights differ: each trainer draws its own init)."""
    from safetensors import safe_open

    def read(path):
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            alphas = {k: float(f.get_tensor(k)) for k in f.keys() if k.endswith(".alpha")}
        return shapes, alphas

    a_shapes, a_alphas = read(ours)
    b_shapes, b_alphas = read(theirs)
    only_ours, only_theirs = sorted(set(a_shapes) - set(b_shapes)), sorted(set(b_shapes) - set(a_shapes))
    common = set(a_shapes) & set(b_shapes)
    shape_diff = sorted(k for k in common if a_shapes[k] != b_shapes[k])
    alpha_diff = sorted(k for k in set(a_alphas) & set(b_alphas) if abs(a_alphas[k] - b_alphas[k]) > 1e-6)
    return {"keys_datakit": len(a_shapes), "keys_kohya": len(b_shapes), "identical_keys": not only_ours and not only_theirs,
            "only_datakit": only_ours[:10], "only_kohya": only_theirs[:10], "shape_differences": shape_diff[:10],
            "alpha_differences": alpha_diff[:10], "identical_shapes": not shape_diff, "identical_alphas": not alpha_diff,
            "modules": sum(1 for k in a_shapes if k.endswith(".alpha"))}


# ---- main --------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 12 composites, 3 steps, 1 round")
    ap.add_argument("--gpu", action="store_true", help="SD1.5 at 512 px in bf16 on CUDA (goal: 1.5x kohya's steps/s)")
    ap.add_argument("--rounds", type=int, default=None, help="runs of each trainer, alternating (default 2; quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 5 on CPU, 30 on GPU; quick 3)")
    ap.add_argument("--bg-count", type=int, default=None, help="composites in the dataset (default 100, as the demo; quick 12)")
    ap.add_argument("--resolution", type=int, default=None, help="training resolution (default 64 on CPU, 512 on GPU)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="OMP/torch threads of each run (default: all cores)")
    ap.add_argument("--work", type=Path, default=None, help="where the model, dataset and runs live (kept for reuse)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds before a run counts as hung")
    ap.add_argument("--rerender", type=Path, default=None, metavar="RESULTS_JSON",
                    help="only rebuild the rows of a saved results file from its measurements")
    a = ap.parse_args()
    if a.rerender:
        rerender(a.rerender)
        return
    started, m0 = time.perf_counter(), machine()
    scripts_env = os.environ.get("KOHYA_SD_SCRIPTS")
    if not scripts_env:
        print("kohya.py: KOHYA_SD_SCRIPTS is not set (a kohya-ss/sd-scripts checkout; see this file's docstring); skipped")
        return
    scripts = Path(scripts_env).expanduser().resolve()
    if not (scripts / "train_network.py").is_file():
        raise SystemExit(f"kohya.py: {scripts} has no train_network.py (KOHYA_SD_SCRIPTS must name an sd-scripts checkout)")
    a.rounds = a.rounds or (1 if a.quick else 2)
    a.steps = a.steps or (3 if a.quick else 30 if a.gpu else 5)
    a.bg_count = a.bg_count or (12 if a.quick else 100)
    a.resolution = a.resolution or (512 if a.gpu else 64)
    a.precision = "bf16" if a.gpu else "no"
    a.device = "cuda" if a.gpu else "cpu"
    threads = a.threads or len(os.sched_getaffinity(0))
    work = (a.work or Path(os.environ.get("TMPDIR", "/tmp")) / "datakit-bench-kohya").resolve()
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = build_model(work / "sd15-random")
    tok_cache = tokenizer_cache(work, model)
    dataset = build_dataset(work, a.resolution, a.batch, a.bg_count)
    info = json.loads((dataset / "datakit.json").read_text())
    n_images = info["counts"]["out"]
    print(f"model {model}, dataset {dataset} ({n_images} images) ready in {time.perf_counter() - t0:.0f} s; "
          f"kohya at {scripts}, python {kohya_python(scripts)}")

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    if not a.gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    runs: dict[str, list[dict]] = {"kohya": [], "datakit": []}
    for r in range(a.rounds):
        order = ["kohya", "datakit"] if r % 2 == 0 else ["datakit", "kohya"]
        for name in order:
            out, clock = work / "runs" / f"{name}-{r}", work / "runs" / f"{name}-{r}.steps.json"
            if name == "kohya":
                cmd, cwd = kohya_command(a, scripts, model, dataset, tok_cache, out, clock), scripts
            else:
                cmd, cwd = datakit_command(a, model, dataset, out, clock), ROOT
            runs[name].append(run_one(name, cmd, out, clock, env, cwd, a.timeout))
    files = compare_files(Path(runs["datakit"][-1]["file"]), Path(runs["kohya"][-1]["file"]))
    settings = {"resolution": a.resolution, "batch": a.batch, "steps": a.steps, "rank": a.rank, "alpha": a.alpha,
                "lr": a.lr, "seed": a.seed, "threads": threads, "images": n_images, "rounds": a.rounds,
                "precision": a.precision, "device": a.device, "kohya": str(scripts), "kohya_commit": _commit(scripts)}
    rows = summarize(runs, files, settings)
    print_rows(rows)
    write_results(Results(
        benchmark="kohya", title=TITLE, settings=settings, rows=rows,
        measurements={"kohya": runs["kohya"], "datakit": runs["datakit"], "files": files}, notes=NOTES,
        quick=a.quick), started=started, machine_at_start=m0)


TITLE = "datakit train vs kohya sd-scripts train_network.py (same LoRA, dataset, model)"
NOTES = ["best of the rounds for whole-run time, CPU and RSS; step time: median over all rounds' steps after each run's first",
         "whole run = process start to exit (imports, model load, latent caching, steps, saving); "
         "kohya caches latents in memory, datakit on disk in a fresh output folder (both from scratch)"]


def summarize(runs: dict[str, list[dict]], files: dict, settings: dict) -> list[Row]:
    """The README rows from the measured runs (also used by --rerender on a saved results file)."""

    def agg(name: str, key: str) -> float | None:
        vals = [x[key] for x in runs[name] if x.get(key) is not None]
        return min(vals) if vals else None  # best of the rounds: the least disturbed by other programs

    def step_median(name: str, key: str = "step_s") -> float | None:
        gaps = [g for x in runs[name] for g in x.get(key, [])]  # the gaps between steps: all after the first step
        return median(gaps) if gaps else None

    gpu = settings["device"] == "cuda"
    k_step, d_step = step_median("kohya"), step_median("datakit")
    # CPU seconds of the trainer's own process per step (kohya's data-loader workers are other processes)
    k_step_cpu, d_step_cpu = step_median("kohya", "step_cpu_s"), step_median("datakit", "step_cpu_s")
    k_wall, d_wall = agg("kohya", "wall_s"), agg("datakit", "wall_s")
    k_cpu, d_cpu = agg("kohya", "cpu_s"), agg("datakit", "cpu_s")
    k_rss, d_rss = agg("kohya", "peak_rss_gb"), agg("datakit", "peak_rss_gb")
    k_first, d_first = agg("kohya", "first_step_s"), agg("datakit", "first_step_s")
    k_enc, d_enc = agg("kohya", "vae_encoding_span_s"), agg("datakit", "vae_encoding_span_s")
    where = (f"SD1.5 size (random weights), {settings['resolution']} px, batch {settings['batch']}, {settings['steps']} steps, "
             f"rank {settings['rank']}, {settings['images']} images, "
             f"{'CUDA bf16' if gpu else 'CPU fp32, ' + str(settings['threads']) + ' threads'}")
    rows = []
    if gpu:
        k_mem, d_mem = agg("kohya", "peak_gpu_gb"), agg("datakit", "peak_gpu_gb")
        speed = k_step / d_step if k_step and d_step else None
        rows.append(Row(case=f"LoRA training vs kohya train_network.py, {where}",
                        datakit=f"{1 / d_step:.2f} steps/s, {d_mem} GB GPU", baseline=f"kohya: {1 / k_step:.2f} steps/s, {k_mem} GB GPU",
                        goal=">= 1.5x steps/s at no more GPU memory", result=f"{speed:.2f}x",
                        met=bool(speed and speed >= 1.5 and d_mem is not None and k_mem is not None and d_mem <= k_mem)))
    else:
        whole = k_wall / d_wall
        rows.append(Row(case=f"LoRA training vs kohya train_network.py, {where}: whole run",
                        datakit=f"{d_wall:.0f} s (first step at {d_first:.0f} s, latent caching {d_enc:.0f} s), CPU {d_cpu:.0f} s, "
                                f"peak RSS {d_rss:.2f} GB",
                        baseline=f"kohya --cache_latents --sdpa: {k_wall:.0f} s (first step at {k_first:.0f} s, latent caching "
                                 f"{k_enc:.0f} s), CPU {k_cpu:.0f} s, peak RSS {k_rss:.2f} GB",
                        goal="whole run >= 2x faster", result=f"{whole:.2f}x", met=whole >= 2.0))
        rows.append(Row(case=f"LoRA training vs kohya train_network.py, {where}: one step (median)",
                        datakit=f"{d_step:.1f} s/step ({d_step_cpu:.1f} CPU-s)", baseline=f"kohya: {k_step:.1f} s/step ({k_step_cpu:.1f} CPU-s)",
                        goal="no step slower (within 5%)", result=f"{k_step / d_step:.2f}x", met=d_step / k_step <= NOT_SLOWER))
    same = files["identical_keys"] and files["identical_shapes"] and files["identical_alphas"]
    rows.append(Row(case="the two LoRA files", datakit=f"{files['keys_datakit']} tensors ({files['modules']} modules)",
                    baseline=f"kohya: {files['keys_kohya']} tensors", goal="identical keys, shapes and alphas",
                    result="identical" if same else "different", met=same))
    return rows


def rerender(path: Path) -> None:
    """Rebuild the rows of a saved results file from its measurements (after a change to summarize)."""
    import json as _json

    data = _json.loads(path.read_text())
    m = data["measurements"]
    rows = summarize({"kohya": m["kohya"], "datakit": m["datakit"]}, m["files"], data["settings"])
    data["rows"] = [r.__dict__ for r in rows]
    data["notes"] = NOTES
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(_json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    print_rows(rows)


def _commit(scripts: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(scripts), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        marker = scripts / "COMMIT"
        return marker.read_text().strip() if marker.is_file() else None


if __name__ == "__main__":
    main()
