"""Opening torch pickle files (.ckpt, .pt, .bin, .optim) without running code.

`torch.load(weights_only=True)` rebuilds tensors, plain containers and numbers only; a file that
names anything else (a class, or a function such as `exec`) is refused before any of it runs.
Every pickle datakit opens goes through `load_plain_torch`, and a refusal (also one raised inside
diffusers or transformers, which load with weights_only too) becomes one clear `error:` line —
never torch's own advice to retry with the unsafe loader.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datakit.errors import UsageError

_MARK = "WeightsUnpickler error:"


def weights_only_refusal(exc: BaseException | None) -> str | None:
    """torch's reason when weights_only refused a file somewhere in this exception's chain, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if "Weights only load failed" in text:
            tail = text.split(_MARK, 1)[1] if _MARK in text else ""
            lines = [line.strip() for line in tail.splitlines() if line.strip()]
            return lines[0].split(". Please use")[0].rstrip(". ") if lines else "not a plain tensor file"
        exc = exc.__cause__ or exc.__context__
    return None


def names_code(reason: str) -> bool:
    """The refusal names a Python global (a class or function the pickle would call), not just a bad byte."""
    return any(word in reason.lower() for word in ("global", "function", "class"))


def unsafe_file_message(path, what: str, reason: str) -> str:
    """The one line for a pickle that holds more than tensors and plain data."""
    if not names_code(reason):
        return (f"cannot read {what} {path}: torch's weights_only loader does not read it as a plain-data torch "
                f"file ({reason}); is it complete, and was it written by torch.save?")
    return (f"refusing to load {what} {path}: it holds pickled Python objects beyond tensors and plain data "
            f"({reason}), and unpickling them could run code. Use a .safetensors file, or convert this one with a "
            "tool you trust")


def load_plain_torch(path, *, what: str, mmap: bool = False, damaged: type[Exception] = UsageError) -> Any:
    """torch.load with weights_only=True on the CPU; pickled code is a UsageError, a damaged file `damaged`.

    mmap: map a zip-format file instead of reading it (torch's older non-zip format is read whole).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise damaged(f"{what} not found: {path}")
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if mmap and "mmap can only be used" in str(exc):  # torch's legacy (non-zip) format
                return torch.load(str(path), map_location="cpu", weights_only=True)
            raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        reason = weights_only_refusal(exc)
        if reason is not None and names_code(reason):
            raise UsageError(unsafe_file_message(path, what, reason)) from None
        if reason is not None:  # weights_only stopped on something other than code: a raw pickle, a cut file
            raise damaged(unsafe_file_message(path, what, reason)) from None
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise damaged(f"cannot read {what} {path}: {detail} (is the file complete?)") from None
