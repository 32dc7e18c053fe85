"""`datakit doctor`: what this machine can run, and where datakit looks for models.

Users reach for this when a GPU is silently not used, so every check reports what actually
happens (a CUDA tensor op, an ONNX session per provider), not what a package claims. Nothing here
may crash: a missing or broken library becomes a line in the report.

The probes: system.py (Python, packages, torch devices, disk), onnx_probe.py (ONNX Runtime
providers), model_locations.py (model variables and caches); report.py gathers them into the report.
"""

from datakit.doctor.model_locations import models_info, rembg_homes, rembg_model_files, scan_hf_cache
from datakit.doctor.onnx_probe import onnxruntime_info, probe_providers, tiny_onnx_model
from datakit.doctor.report import collect, findings, format_report
from datakit.doctor.system import torch_info

__all__ = [
    "collect", "findings", "format_report", "models_info", "onnxruntime_info", "probe_providers", "rembg_homes",
    "rembg_model_files", "scan_hf_cache", "tiny_onnx_model", "torch_info",
]
