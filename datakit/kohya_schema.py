"""kohya sd-scripts' dataset-config schema: which keys each level of a `dataset.toml` accepts, and their types.

Re-derived from kohya's library/config_util.py (ConfigSanitizer, sd-scripts 48d368f): kohya
validates with voluptuous and refuses unknown keys, keys at the wrong level and wrong types, so a
typo such as `caption_extention` stops a kohya run. `datakit emit` checks what it writes against
this schema; `datakit train` checks what it reads, so a dataset behaves the same in both tools.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

# Keys that may appear in subsets, datasets and [general] ("ascendable" in kohya's terms).
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
ALL_KEYS = {**SUBSET_COMMON, **SUBSET_ONLY, **DATASET_ONLY}


@dataclass(frozen=True)
class Problem:
    """One reason kohya would refuse a dataset config: where, which key (if any), what."""

    where: str
    key: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _type_ok(value: Any, kind: Any) -> bool:
    # voluptuous checks with isinstance, where bool is an int; kohya therefore accepts `true` for ints.
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "pair_float":
        return isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
    if kind == "int_or_pair":
        return isinstance(value, int) or (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value))
    return isinstance(value, kind)


def _unknown(key: str, where: str, allowed: dict) -> Problem:
    if key in ALL_KEYS:
        return Problem(where, key, f"key '{key}' is not allowed here")
    close = difflib.get_close_matches(key, list(ALL_KEYS), n=1, cutoff=0.75)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return Problem(where, key, f"unknown key '{key}'{hint}")


def _check_table(table: dict, allowed: dict, where: str, problems: list[Problem]) -> None:
    for key, value in table.items():
        if key not in allowed:
            problems.append(_unknown(key, where, allowed))
        elif not _type_ok(value, allowed[key]):
            problems.append(Problem(where, key, f"'{key}' has the wrong type ({type(value).__name__})"))


def check(config: dict) -> list[Problem]:
    """Everything kohya would refuse the config for (an empty list: it loads)."""
    problems: list[Problem] = []
    for key in config:
        if key not in ("general", "datasets"):
            problems.append(Problem("top level", key, f"key '{key}' is not allowed (only [general] and [[datasets]])"))
    general = config.get("general", {})
    if not isinstance(general, dict):
        problems.append(Problem("[general]", None, "[general] must be a table"))
    else:
        _check_table(general, {**DATASET_ONLY, **SUBSET_COMMON}, "[general]", problems)
    datasets = config.get("datasets", [])
    if not isinstance(datasets, list) or not datasets:
        problems.append(Problem("top level", "datasets", "[[datasets]] must be a non-empty array of tables"))
        return problems
    for i, ds in enumerate(datasets):
        where = f"datasets[{i}]"
        if not isinstance(ds, dict):
            problems.append(Problem(where, None, "must be a table"))
            continue
        subsets = ds.get("subsets")
        _check_table({k: v for k, v in ds.items() if k != "subsets"}, {**DATASET_ONLY, **SUBSET_COMMON}, where, problems)
        if not isinstance(subsets, list) or not subsets:
            problems.append(Problem(where, "subsets", "needs at least one [[datasets.subsets]]"))
            continue
        for j, sub in enumerate(subsets):
            swhere = f"{where}.subsets[{j}]"
            if not isinstance(sub, dict):
                problems.append(Problem(swhere, None, "must be a table"))
                continue
            if "metadata_file" in sub:
                # kohya's fine-tuning subsets (captions from a JSON file): valid there, not supported by datakit.
                problems.append(Problem(swhere, "metadata_file", "metadata_file (a kohya fine-tuning subset) is not "
                                        "supported by datakit; give image_dir with same-stem caption files"))
                sub = {k: v for k, v in sub.items() if k != "metadata_file"}
            _check_table(sub, {**SUBSET_COMMON, **SUBSET_ONLY}, swhere, problems)
            for req in SUBSET_REQUIRED:
                if req not in sub:
                    problems.append(Problem(swhere, req, f"required key '{req}' is missing"))
    return problems


def validate(config: dict) -> list[str]:
    """Problems kohya would refuse the config for, as text (empty list: it loads)."""
    return [str(p) for p in check(config)]
