"""Where datakit looks for models: the variables that name them, the Hugging Face cache, rembg's folders."""

from __future__ import annotations

import json
import os
from pathlib import Path


# Environment variables that name models or model folders, and what reads them.
MODEL_ENV_VARS = {
    "DATAKIT_REMBG_MODEL": "cutout --method rembg: rembg model name (isnet-anime, u2net, birefnet-...) or .onnx file",
    "U2NET_HOME": "rembg's model folder, old flat layout (<name>.onnx); when set it also replaces REMBG_HOME",
    "REMBG_HOME": "rembg's data folder: models in REMBG_HOME/models/<name>/<name>.onnx (default ~/.rembg)",
    "DATAKIT_TAGGER": "tag: WD14-format tagger folder (model.onnx + selected_tags.csv) or Hugging Face id",
    "DATAKIT_BG_MODEL": "backgrounds --engine sdxl: diffusers folder, .safetensors checkpoint or Hugging Face id",
    "DATAKIT_BASE_MODEL": "train, eval: base model (diffusers folder, .safetensors/.ckpt checkpoint or Hugging Face id)",
    "DATAKIT_CLIP_MODEL": "eval --clip-model: CLIP model (a folder saved with save_pretrained, or a Hugging Face id in the cache)",
    "HF_HOME": "Hugging Face home (the cache is HF_HOME/hub unless HF_HUB_CACHE is set)",
    "HF_HUB_CACHE": "Hugging Face model cache",
}


# Variables whose value names a model (the others name folders).
MODEL_VALUE_VARS = ("DATAKIT_REMBG_MODEL", "DATAKIT_TAGGER", "DATAKIT_BG_MODEL", "DATAKIT_BASE_MODEL", "DATAKIT_CLIP_MODEL")


def hf_cache_dir() -> Path:
    """Where huggingface_hub keeps models: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def rembg_homes() -> tuple[Path, Path]:
    """rembg's (home, legacy folder), resolved the way rembg's sessions do.

    Models live in HOME/models/<name>/<name>.onnx, or flat in the legacy folder (LEGACY/<name>.onnx).
    U2NET_HOME, when set, is both; else HOME is REMBG_HOME, else XDG_DATA_HOME/rembg, else ~/.rembg,
    and LEGACY is XDG_DATA_HOME/.u2net, else ~/.u2net. (Mirrored here because importing rembg
    imports pymatting, which compiles with numba for half a minute.)
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    legacy = Path(os.environ.get("U2NET_HOME") or os.path.join(xdg or "~", ".u2net")).expanduser()
    if os.environ.get("U2NET_HOME"):
        return legacy, legacy
    default = os.path.join(xdg, "rembg") if xdg else os.path.join("~", ".rembg")
    return Path(os.environ.get("REMBG_HOME") or default).expanduser(), legacy


def rembg_model_files() -> list[Path]:
    """Every rembg .onnx model already on disk (both layouts)."""
    home, legacy = rembg_homes()
    found = set(legacy.glob("*.onnx")) if legacy.is_dir() else set()
    if (home / "models").is_dir():
        found |= set((home / "models").glob("*/*.onnx"))
    return sorted(found)


def classify_files(files: list[Path]) -> str | None:
    """What kind of datakit-usable model a set of files is (None: not one datakit uses)."""
    names = {f.name for f in files}
    if "model_index.json" in names:
        index = next(f for f in files if f.name == "model_index.json")
        try:
            cls = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "pipeline")
        except Exception:
            cls = "pipeline"
        return f"diffusers {cls}"
    if any(n.endswith(".onnx") for n in names) and ("selected_tags.csv" in names or any(n.endswith(".csv") for n in names)):
        return "WD14-format tagger (ONNX + tags CSV)"
    if any(n.endswith(".onnx") for n in names):
        return "ONNX model"
    if any(n.endswith((".safetensors", ".ckpt")) for n in names) and not any(
        n in names for n in ("config.json", "tokenizer_config.json")
    ):
        return "single-file checkpoint"
    return None


def scan_hf_cache(cache: Path) -> dict:
    """Repos in the Hugging Face cache, with those datakit can use classified."""
    result: dict = {"path": str(cache), "exists": cache.is_dir(), "usable": [], "other": 0}
    if not cache.is_dir():
        return result
    for repo_dir in sorted(cache.glob("models--*")):
        repo_id = repo_dir.name[len("models--"):].replace("--", "/")
        files = [f for f in (repo_dir / "snapshots").glob("*/**/*") if f.is_file()] if (repo_dir / "snapshots").is_dir() else []
        kind = classify_files(files)
        if kind:
            size = 0
            for f in files:
                try:
                    size += f.stat().st_size  # follows the snapshot symlink to the blob
                except OSError:
                    pass
            result["usable"].append({"repo": repo_id, "kind": kind, "size_gb": round(size / 2**30, 2)})
        else:
            result["other"] += 1
    return result


def describe_model_value(var: str, value: str, hf_cache: Path) -> dict:
    """Resolve one model-naming value: an existing path, a rembg model name, or a Hugging Face id."""
    entry: dict = {"variable": var, "value": value, "purpose": MODEL_ENV_VARS.get(var, "")}
    path = Path(value).expanduser()
    if path.exists():
        entry["found"] = True
        if path.is_dir():
            kind = classify_files([f for f in path.rglob("*") if f.is_file()][:2000])
            entry["where"] = f"folder {path}" + (f" ({kind})" if kind else "")
        else:
            entry["where"] = f"file {path} ({path.stat().st_size / 2**20:.1f} MiB)"
        return entry
    looks_like_path = value.endswith((".onnx", ".safetensors", ".ckpt", ".pt", ".bin")) or value.startswith((".", "/", "~"))
    if var == "DATAKIT_REMBG_MODEL" and not looks_like_path:
        home, legacy = rembg_homes()
        candidates = [home / "models" / value / f"{value}.onnx", legacy / f"{value}.onnx"]
        hit = next((c for c in candidates if c.is_file()), None)
        entry["found"] = hit is not None
        entry["where"] = f"rembg model file {hit}" if hit else "not downloaded (looked for " + " and ".join(map(str, candidates)) + ")"
        return entry
    if not looks_like_path and value.count("/") == 1:
        repo_dir = hf_cache / ("models--" + value.replace("/", "--"))
        entry["found"] = (repo_dir / "snapshots").is_dir()
        entry["where"] = f"Hugging Face cache {repo_dir}" + ("" if entry["found"] else " (not downloaded)")
        return entry
    entry["found"] = False
    entry["where"] = f"no such file or folder: {path}"
    return entry


def models_info(model_options: list[dict] | None = None) -> dict:
    """Environment variables and flags that name models, whether what they name exists, and the caches."""
    cache = hf_cache_dir()
    home, legacy = rembg_homes()
    env = []
    for var, purpose in MODEL_ENV_VARS.items():
        value = os.environ.get(var)
        if value and var in MODEL_VALUE_VARS:
            env.append(describe_model_value(var, value, cache))
        elif value:
            p = Path(value).expanduser()
            env.append({"variable": var, "value": value, "purpose": purpose, "found": p.is_dir(),
                        "where": f"folder {p}" + ("" if p.is_dir() else " (missing)")})
        else:
            env.append({"variable": var, "value": None, "purpose": purpose, "found": None, "where": "not set"})
    return {
        "environment": env,
        "options": model_options or [],
        "rembg": {"home": str(home), "legacy_folder": str(legacy), "models": [str(p) for p in rembg_model_files()]},
        "hf_cache": scan_hf_cache(cache),
        "hf_offline": os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "ON"),
    }
