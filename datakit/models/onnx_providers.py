"""Which onnxruntime execution providers to ask for (shared by the segmenter and the tagger)."""

from __future__ import annotations

import ctypes


def cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads (so trying the CUDA provider is worth it)."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def choose_providers(device: str, available: list[str], *, cuda_options: dict | None = None) -> list:
    """Providers to ask onnxruntime for, best first; CPU always last as the fallback."""
    wanted: list = []
    if device == "cuda" or (device == "auto" and cuda_driver_present()):
        if "CUDAExecutionProvider" in available:
            wanted.append(("CUDAExecutionProvider", cuda_options) if cuda_options else "CUDAExecutionProvider")
    elif device == "mps" and "CoreMLExecutionProvider" in available:
        wanted.append("CoreMLExecutionProvider")
    wanted.append("CPUExecutionProvider")
    return wanted
