"""kohya sd-scripts dataset config (`dataset.toml`): writing it.

The schema it must satisfy (kohya's library/config_util.py) lives in datakit.kohya_schema, shared
with `datakit train`, which reads these files; `validate` is re-exported here so emit never writes a
file kohya would reject.
"""

from __future__ import annotations

import json
import math
from typing import Any

from datakit.kohya_schema import validate

__all__ = ["bucket_settings", "dumps", "validate"]


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
