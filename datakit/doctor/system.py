"""What this machine is: Python, package versions, torch's devices (a real op on each), free disk."""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import sys
from pathlib import Path

from datakit import __version__


# Distributions whose versions matter for datakit (import name in brackets where it differs).
PACKAGES = [
    "torch",
    "onnxruntime-gpu",
    "onnxruntime",
    "onnx",
    "diffusers",
    "transformers",
    "accelerate",
    "peft",
    "safetensors",
    "huggingface-hub",
    "rembg",
    "pymatting",
    "opencv-python-headless",
    "opencv-python",
    "pillow",
    "numpy",
    "typer",
    "rich",
]


def package_versions() -> dict[str, str | None]:
    """Installed version of each distribution datakit uses (None when absent); reads metadata only."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
        except Exception:  # broken metadata must not stop the report
            versions[name] = None
    return versions


def python_info() -> dict:
    """Interpreter, platform and datakit itself."""
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "datakit": __version__,
        "datakit_path": str(Path(__file__).resolve().parents[1]),
    }


def nvidia_driver_present() -> bool:
    """True when an NVIDIA kernel driver is loaded (Linux) or nvidia-smi is on PATH."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def torch_info() -> dict:
    """torch version, build, CUDA/MPS availability, device names, and a real op on each device."""
    try:
        import torch
    except Exception as exc:  # ImportError, or a broken CUDA runtime raising at import
        return {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    info: dict = {
        "installed": True,
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,  # None on a CPU-only build
        "hip_build": getattr(torch.version, "hip", None),
        "cuda_available": False,
        "cuda_devices": [],
        "cuda_works": None,
        "mps_available": False,
        "mps_works": None,
        "threads": torch.get_num_threads(),
    }
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                info["cuda_devices"].append(
                    {
                        "index": i,
                        "name": props.name,
                        "memory_gb": round(props.total_memory / 2**30, 1),
                        "capability": f"{props.major}.{props.minor}",
                    }
                )
            info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
            info["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
            info["cuda_works"], info["cuda_error"] = _try_op(torch, "cuda")
    except Exception as exc:
        info["cuda_error"] = f"{type(exc).__name__}: {exc}"
        info["cuda_works"] = False
    try:
        mps = getattr(torch.backends, "mps", None)
        info["mps_available"] = bool(mps and mps.is_available())
        if info["mps_available"]:
            info["mps_works"], info["mps_error"] = _try_op(torch, "mps")
    except Exception as exc:  # pragma: no cover - macOS only
        info["mps_error"] = f"{type(exc).__name__}: {exc}"
    return info


def _try_op(torch, device: str) -> tuple[bool, str | None]:
    """Run a small matmul on `device`: availability flags can be true on a device that cannot compute."""
    try:
        x = torch.ones(8, 8, device=device)
        y = (x @ x).sum().item()
        return (y == 8 * 8 * 8), None
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def disk_info(paths: dict[str, Path]) -> list[dict]:
    """Free space where datakit writes (the working folder, the model caches, the temp folder)."""
    rows = []
    for label, path in paths.items():
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:  # a cache not created yet: its parent's disk
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
            rows.append({"what": label, "path": str(path), "free_gb": round(usage.free / 2**30, 1),
                         "total_gb": round(usage.total / 2**30, 1)})
        except OSError as exc:
            rows.append({"what": label, "path": str(path), "error": exc.strerror})
    return rows
