"""Load Stable Diffusion pipelines (SD1.x, SD2.x, SDXL) from a folder, a single checkpoint or the HF cache.

One entry point, `load_diffusion_pipeline`, used by the backgrounds stage (generation) and the
trainers (the base model). It accepts:

- a diffusers folder (`model_index.json` + component folders), e.g. one saved with `save_pretrained`;
- a single `.safetensors` / `.ckpt` checkpoint in the original (LDM / SGM) key layout, the form most
  community models are shared in. diffusers' `from_single_file` needs the model's JSON configs and
  tokenizer files: the configs ship with datakit (`configs/<family>/`), the CLIP tokenizer files
  are not ours to ship, so they come from `config_dir` or the Hugging Face cache;
- a Hugging Face id (`stabilityai/stable-diffusion-xl-base-1.0`), from the local cache, or
  downloaded when the machine is online and HF_HUB_OFFLINE is not set.

Everything heavy (torch, diffusers, transformers) is imported inside functions so that importing
this module costs nothing.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from datakit.errors import ModelNotFoundError, UsageError

FAMILIES = ("sd1", "sd2", "sdxl")
CONFIG_ROOT = Path(__file__).parent / "configs"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# Where each family's tokenizers live on the Hugging Face hub: (repo, subfolder) candidates, first
# found wins. Only the local cache is searched for these; nothing is downloaded implicitly.
TOKENIZER_SOURCES: dict[str, dict[str, list[tuple[str, str | None]]]] = {
    "sd1": {
        "tokenizer": [
            ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
            ("runwayml/stable-diffusion-v1-5", "tokenizer"),
            ("openai/clip-vit-large-patch14", None),
        ]
    },
    "sd2": {
        "tokenizer": [
            ("stabilityai/stable-diffusion-2-1", "tokenizer"),
            ("stabilityai/stable-diffusion-2-1-base", "tokenizer"),
        ]
    },
    "sdxl": {
        "tokenizer": [
            ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer"),
            ("openai/clip-vit-large-patch14", None),
        ],
        "tokenizer_2": [
            ("stabilityai/stable-diffusion-xl-base-1.0", "tokenizer_2"),
            ("laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", None),
        ],
    },
}

# Key prefixes that identify a family in an original-layout checkpoint.
_SDXL_KEY = "conditioner.embedders.1.model."
_SD2_KEY = "cond_stage_model.model."
_SD1_KEY = "cond_stage_model.transformer."
_UNET_PREFIX = "model.diffusion_model."


# ---------------------------------------------------------------------------------------------
# Family detection
# ---------------------------------------------------------------------------------------------


def detect_family(pipeline_or_unet: Any) -> str:
    """'sd1', 'sd2' or 'sdxl' for a diffusers pipeline or a UNet2DConditionModel (or its config)."""
    unet = getattr(pipeline_or_unet, "unet", pipeline_or_unet)
    if getattr(pipeline_or_unet, "text_encoder_2", None) is not None:
        return "sdxl"
    config = getattr(unet, "config", unet)
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    if get("addition_embed_type") == "text_time":
        return "sdxl"
    cross = get("cross_attention_dim")
    if cross == 2048:
        return "sdxl"
    # SD2 is the OpenCLIP-H text encoder (1024 wide) with linear projections in the transformers.
    if cross == 1024 or get("use_linear_projection"):
        return "sd2"
    return "sd1"


def family_of_folder(folder: Path) -> str:
    """Family of a diffusers folder, from model_index.json and unet/config.json."""
    index = _read_json(folder / "model_index.json")
    if "XL" in str(index.get("_class_name", "")) or "text_encoder_2" in index:
        return "sdxl"
    unet_cfg = folder / "unet" / "config.json"
    return detect_family(_read_json(unet_cfg)) if unet_cfg.is_file() else "sd1"


def checkpoint_keys(path: Path) -> list[str]:
    """Tensor names in a single-file checkpoint (reads only the header for .safetensors)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                return list(fh.keys())
        except Exception as exc:
            raise ModelNotFoundError(f"cannot read checkpoint {path}: {exc} (is the file complete?)") from exc
    return list(_load_ckpt_state_dict(path).keys())


def family_of_checkpoint(keys: list[str]) -> str:
    """Family of an original-layout (LDM/SGM) checkpoint from its key names."""
    if any(k.startswith(_SDXL_KEY) for k in keys):
        return "sdxl"
    if any(k.startswith(_SD2_KEY) for k in keys):
        return "sd2"
    if any(k.startswith(_SD1_KEY) for k in keys) or any(k.startswith(_UNET_PREFIX) for k in keys):
        return "sd1"
    raise ModelNotFoundError(
        "the checkpoint is not a Stable Diffusion 1/2/XL model in the original layout "
        "(no model.diffusion_model.* / conditioner.* / cond_stage_model.* tensors); "
        "a diffusers folder or a LoRA file is not a base checkpoint"
    )


def _load_ckpt_state_dict(path: Path) -> dict:
    """A pickled .ckpt's state dict, loaded with weights_only=True (never runs pickled code)."""
    from datakit.torchfile import load_plain_torch

    obj = load_plain_torch(path, what="checkpoint", mmap=True, damaged=ModelNotFoundError)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelNotFoundError(f"{path} does not hold a state dict")
    return obj


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def pipeline_class(family: str):
    """The diffusers text-to-image pipeline class for a family."""
    import diffusers

    _check_family(family)
    return diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline


def quiet_loading() -> None:
    """Silence the libraries' own loading chatter (per-component progress bars, notes about optional
    image processors): datakit prints its own progress and --quiet must stay quiet. Failures still
    surface as exceptions, turned into one `error:` line."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_diffusion_pipeline(
    model: str | os.PathLike,
    *,
    family: str | None = None,
    config_dir: str | os.PathLike | None = None,
    torch_dtype: Any = None,
    device: Any = None,
    prediction_type: str | None = None,
):
    """Load a text-to-image pipeline from a folder, a single checkpoint file or a Hugging Face id.

    family: "sd1" | "sd2" | "sdxl"; detected when None.
    config_dir: for single files, a folder with the model's diffusers configs and/or tokenizer(s)
        (`tokenizer/`, `tokenizer_2/`, e.g. a copy of the base model repo without weights).
    prediction_type: override the scheduler's ("epsilon" | "v_prediction"), e.g. SD2 512-px models.
    """
    if family is not None:
        _check_family(family)
    if prediction_type is not None and prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise UsageError(f"unknown prediction type {prediction_type!r} (epsilon, v_prediction or sample)")
    text = str(model)
    path = Path(text).expanduser()
    config_path = Path(config_dir).expanduser() if config_dir else None
    if config_path is not None and not config_path.is_dir():
        raise ModelNotFoundError(f"--config-dir {config_path} is not a folder")

    quiet_loading()
    with warnings.catch_warnings():
        # Recent diffusers renamed torch_dtype to dtype (a FutureWarning); the older releases we support know only torch_dtype.
        warnings.filterwarnings("ignore", message=".*dtype.*", category=FutureWarning)
        if path.is_dir():
            pipe = _load_folder(path, family, torch_dtype)
        elif path.is_file():
            pipe = _load_single_file(path, family, config_path, torch_dtype)
        elif looks_like_hub_id(text) and path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            pipe = _load_hub(text, family, torch_dtype)
        else:
            pipe = None
    if pipe is None:
        raise ModelNotFoundError(
            f"model not found: {text} (give a diffusers folder, a .safetensors checkpoint, or a Hugging Face id "
            "such as stabilityai/stable-diffusion-xl-base-1.0 that is in the local cache)"
        )

    if prediction_type is not None:
        pipe.scheduler = pipe.scheduler.__class__.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    if device is not None:
        pipe.to(device)
    return pipe


def _load_folder(folder: Path, family: str | None, torch_dtype):
    if not (folder / "model_index.json").is_file():
        found = sorted(p.name for p in folder.iterdir())[:8]
        raise ModelNotFoundError(
            f"{folder} is not a diffusers model folder (no model_index.json; found {found or 'nothing'}). "
            "Point --model at the folder holding model_index.json, unet/, vae/ ..., or at a .safetensors checkpoint"
        )
    family = family or family_of_folder(folder)
    cls = pipeline_class(family)
    kwargs = _no_safety_checker(family)
    try:
        pipe = cls.from_pretrained(str(folder), torch_dtype=torch_dtype, local_files_only=True, **kwargs)
    except Exception as exc:  # diffusers raises OSError, ValueError, KeyError, safetensors errors ...
        raise ModelNotFoundError(f"cannot load the diffusers model in {folder}: {_first_line(exc)}") from exc
    check_tokenizers(pipe, str(folder))
    return pipe


def _load_hub(repo_id: str, family: str | None, torch_dtype):
    import diffusers

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    cls = pipeline_class(family) if family else diffusers.DiffusionPipeline
    kwargs = _no_safety_checker(family or "sd1") if family != "sdxl" else {}
    last_exc: Exception | None = None
    # The cache first (fast, offline); a download only when allowed.
    for local_only in (True,) if offline else (True, False):
        try:
            pipe = cls.from_pretrained(repo_id, torch_dtype=torch_dtype, local_files_only=local_only, **kwargs)
            check_tokenizers(pipe, repo_id)
            break
        except Exception as exc:  # huggingface_hub raises several unrelated types for "not there"
            last_exc = exc
    else:
        how = "the machine is offline (HF_HUB_OFFLINE=1)" if offline else "the download failed"
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the Hugging Face cache and {how}: {_first_line(last_exc)}. "
            f"Fetch it with `hf download {repo_id}` (huggingface_hub's CLI) or give a local folder or .safetensors file"
        ) from last_exc
    if not isinstance(pipe, (diffusers.StableDiffusionPipeline, diffusers.StableDiffusionXLPipeline)):
        raise ModelNotFoundError(f"{repo_id} is a {type(pipe).__name__}, not a Stable Diffusion 1/2/XL text-to-image model")
    return pipe


def _load_single_file(path: Path, family: str | None, config_dir: Path | None, torch_dtype):
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelNotFoundError(
            f"{path} is not a model checkpoint (expected .safetensors or .ckpt, or a diffusers folder)"
        )
    if path.stat().st_size == 0:
        raise ModelNotFoundError(f"checkpoint {path} is empty (an interrupted download?)")
    keys = checkpoint_keys(path)
    family = family or family_of_checkpoint(keys)
    if not any(k.startswith(_UNET_PREFIX) for k in keys):
        raise ModelNotFoundError(f"{path} has no UNet weights (model.diffusion_model.*): not a full base checkpoint")

    configs = configs_for(family, config_dir)
    tokenizers = {name: _find_tokenizer(family, name, config_dir) for name in TOKENIZER_SOURCES[family]}
    cls = pipeline_class(family)
    kwargs = dict(tokenizers)
    if family != "sdxl":
        kwargs.update(safety_checker=None, feature_extractor=None)
    for name, tok in tokenizers.items():
        if len(tok) <= 256:
            raise ModelNotFoundError(f"the {name} files found for {path} hold only {len(tok)} tokens (incomplete copy?)")
    try:
        return cls.from_single_file(
            str(path), config=str(configs), torch_dtype=torch_dtype, local_files_only=True, **kwargs
        )
    except Exception as exc:
        raise ModelNotFoundError(
            f"cannot load {path} as a {family} checkpoint with configs from {configs}: {_first_line(exc)} "
            "(wrong --family? a pruned or partial file?)"
        ) from exc


def configs_for(family: str, config_dir: Path | None) -> Path:
    """The diffusers config folder for a single file: config_dir when it holds one, else the shipped one."""
    if config_dir is not None and (config_dir / "model_index.json").is_file():
        return config_dir
    shipped = CONFIG_ROOT / family
    if not (shipped / "model_index.json").is_file():  # pragma: no cover - broken installation
        raise ModelNotFoundError(f"datakit's shipped configs for {family} are missing ({shipped})")
    return shipped


def _find_tokenizer(family: str, name: str, config_dir: Path | None):
    """A CLIPTokenizer from config_dir/<name> (or config_dir itself), else the Hugging Face cache."""
    from transformers import CLIPTokenizer

    tried: list[str] = []
    if config_dir is not None:
        for cand in (config_dir / name, config_dir):
            if _has_tokenizer_files(cand):
                return CLIPTokenizer.from_pretrained(str(cand))
            tried.append(str(cand))
    for repo, sub in TOKENIZER_SOURCES[family][name]:
        cached = _cached_tokenizer_folder(repo, sub)
        if cached is not None:
            return CLIPTokenizer.from_pretrained(str(cached))
        tried.append(f"HF cache {repo}" + (f"/{sub}" if sub else ""))
    repo, sub = TOKENIZER_SOURCES[family][name][0]
    include = f"--include '{sub}/*'" if sub else "--include '*.json' --include '*.txt'"
    raise ModelNotFoundError(
        f"the {family} checkpoint needs the CLIP tokenizer files for '{name}' (vocab.json + merges.txt, or "
        f"tokenizer.json), which datakit does not ship. Looked in: {', '.join(tried)}. Fix: run "
        f"`hf download {repo} {include}`, "
        f"or pass --config-dir DIR where DIR/{name}/ holds those files"
    )


def _cached_tokenizer_folder(repo: str, sub: str | None) -> Path | None:
    """The snapshot folder holding a repo's tokenizer files in the HF cache, or None.

    Checked file by file because transformers 5 quietly builds an empty 2-token tokenizer when
    asked for one whose files are missing, which would make every prompt the same.
    """
    from huggingface_hub import try_to_load_from_cache

    def cached(name: str) -> Path | None:
        hit = try_to_load_from_cache(repo, f"{sub}/{name}" if sub else name)
        return Path(hit) if isinstance(hit, str) else None

    for names in (("vocab.json", "merges.txt"), ("tokenizer.json",)):
        found = [cached(n) for n in names]
        if all(found):
            return found[0].parent
    return None


def check_tokenizers(pipe, where: str) -> None:
    """Refuse a pipeline whose tokenizer came up empty (missing files load silently in transformers 5)."""
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None and len(tok) <= 256:
            raise ModelNotFoundError(
                f"{where}: the {name} has only {len(tok)} tokens, so its vocab.json/merges.txt or tokenizer.json "
                f"are missing; copy them into {name}/ (from the base model's repository)"
            )


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )


def _no_safety_checker(family: str) -> dict:
    # Backgrounds and training never need the NSFW image classifier; skipping it saves 1.2 GB and a download.
    return {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise UsageError(f"unknown model family {family!r} (choose sd1, sd2 or sdxl)")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(f"cannot read {path}: {exc}") from exc


def _first_line(exc: BaseException | None) -> str:
    from datakit.torchfile import names_code, weights_only_refusal

    refusal = weights_only_refusal(exc)
    if refusal is not None:  # diffusers/transformers refused a pickled .bin: say why, not torch's unsafe advice
        if names_code(refusal):
            return f"a pickled weights file holds Python objects beyond tensors, which could run code ({refusal}); refused"
        return f"a pickled weights file is not a plain tensor file ({refusal})"
    text = str(exc).strip().splitlines() if exc else []
    if not text:
        return type(exc).__name__
    # diffusers points at a stack trace the user never sees (we print one line, not the trace).
    line = text[0].replace(" Please check out the root cause in the stacktrace above.", "")
    return line.rstrip(". ")
