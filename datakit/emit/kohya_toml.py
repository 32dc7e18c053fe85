"""kohya sd-scripts dataset config (`dataset.toml`): writing it, and the schema it must satisfy.

The schema below is re-derived from kohya's documented dataset-config format (library/config_util.py,
docs/config_README-en.md): which keys each level accepts and their types. kohya validates with
voluptuous and refuses unknown keys, so a key in the wrong place is a hard error there; `validate`
reproduces that check so emit never writes a file kohya would reject.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Keys that may appear in subsets, datasets and [general] ("ascendable").
SUBSET_COMMON = {
    "color_aug": bool,
    "face_crop_aug_range": "pair_float",
    "flip_aug": bool,
    "num_repeats": int,
    "random_crop": bool,
    "shuffle_caption": bool,
    "keep_tokens": int,
    "keep_tokens_separator": str,
    "secondary_separator": str,
    "caption_separator": str,
    "enable_wildcard": bool,
    "token_warmup_min": int,
    "token_warmup_step": "number",
    "caption_prefix": str,
    "caption_suffix": str,
    "custom_attributes": dict,
    "resize_interpolation": str,
    # caption dropout (accepted by the LoRA/DreamBooth trainers)
    "caption_dropout_every_n_epochs": int,
    "caption_dropout_rate": "number",
    "caption_tag_dropout_rate": "number",
    # DreamBooth-style (folder of images + same-stem captions)
    "caption_extension": str,
    "class_tokens": str,
    "cache_info": bool,
}
# Keys that only a DreamBooth-style subset may carry.
SUBSET_ONLY = {"image_dir": str, "is_reg": bool, "alpha_mask": bool}
SUBSET_REQUIRED = ("image_dir",)
# Keys of a dataset (and [general]) that subsets may not carry: bucketing and batching.
DATASET_ONLY = {
    "batch_size": int,
    "bucket_no_upscale": bool,
    "bucket_reso_steps": int,
    "enable_bucket": bool,
    "max_bucket_reso": int,
    "min_bucket_reso": int,
    "validation_seed": int,
    "validation_split": float,
    "resolution": "int_or_pair",
    "network_multiplier": float,
}


def _type_ok(value: Any, kind: Any) -> bool:
    # voluptuous checks with isinstance, where bool is an int; kohya therefore accepts `true` for ints.
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "pair_float":
        return isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
    if kind == "int_or_pair":
        return isinstance(value, int) or (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value))
    return isinstance(value, kind)


def _check_table(table: dict, allowed: dict, where: str, errors: list[str]) -> None:
    for key, value in table.items():
        if key not in allowed:
            errors.append(f"{where}: key '{key}' is not allowed here")
        elif not _type_ok(value, allowed[key]):
            errors.append(f"{where}: '{key}' has the wrong type ({type(value).__name__})")


def validate(config: dict) -> list[str]:
    """Problems kohya would refuse the config for (empty list: it loads)."""
    errors: list[str] = []
    top_allowed = {"general", "datasets"}
    for key in config:
        if key not in top_allowed:
            errors.append(f"top level: key '{key}' is not allowed (only [general] and [[datasets]])")
    general = config.get("general", {})
    if not isinstance(general, dict):
        errors.append("[general] must be a table")
    else:
        _check_table(general, {**DATASET_ONLY, **SUBSET_COMMON}, "[general]", errors)
    datasets = config.get("datasets", [])
    if not isinstance(datasets, list) or not datasets:
        errors.append("[[datasets]] must be a non-empty array of tables")
        return errors
    for i, ds in enumerate(datasets):
        where = f"datasets[{i}]"
        if not isinstance(ds, dict):
            errors.append(f"{where} must be a table")
            continue
        subsets = ds.get("subsets")
        _check_table({k: v for k, v in ds.items() if k != "subsets"}, {**DATASET_ONLY, **SUBSET_COMMON}, where, errors)
        if not isinstance(subsets, list) or not subsets:
            errors.append(f"{where}: needs at least one [[datasets.subsets]]")
            continue
        for j, sub in enumerate(subsets):
            swhere = f"{where}.subsets[{j}]"
            if "metadata_file" in sub:
                errors.append(f"{swhere}: fine-tuning subsets (metadata_file) are not what datakit writes")
            _check_table(sub, {**SUBSET_COMMON, **SUBSET_ONLY}, swhere, errors)
            for req in SUBSET_REQUIRED:
                if req not in sub:
                    errors.append(f"{swhere}: required key '{req}' is missing")
    return errors


# -- writing ------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("TOML values must be finite")
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes; \uXXXX for control characters).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _lines(table: dict, indent: str = "") -> list[str]:
    return [f"{indent}{key} = {_toml_value(value)}" for key, value in table.items()]


def dumps(config: dict, header: str = "") -> str:
    """The config as TOML text (general, then each dataset with its subsets), comments first."""
    out: list[str] = [f"# {line}" if line else "#" for line in header.splitlines()]
    if out:
        out.append("")
    out.append("[general]")
    out.extend(_lines(config.get("general", {})))
    for ds in config.get("datasets", []):
        out.append("")
        out.append("[[datasets]]")
        out.extend(_lines({k: v for k, v in ds.items() if k != "subsets"}))
        for sub in ds.get("subsets", []):
            out.append("")
            out.append("  [[datasets.subsets]]")
            out.extend(_lines(sub, "  "))
    return "\n".join(out) + "\n"


def bucket_settings(resolution: int, *, no_upscale: bool = False) -> dict:
    """kohya's bucketing settings scaled to the resolution (512 gives kohya's own 256..1024 defaults)."""
    return {
        "enable_bucket": True,
        "resolution": resolution,
        "min_bucket_reso": max(64, (resolution // 2) // 64 * 64),
        "max_bucket_reso": resolution * 2,
        "bucket_reso_steps": 64,
        "bucket_no_upscale": no_upscale,
    }
