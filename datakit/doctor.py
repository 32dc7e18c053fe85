"""`datakit doctor`: what this machine can run, and where datakit looks for models.

Users reach for this when a GPU is silently not used, so every check reports what actually
happens (a CUDA tensor op, an ONNX session per provider), not what a package claims. Nothing here
may crash: a missing or broken library becomes a line in the report.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
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

# Environment variables that name models or model folders, and what reads them.
MODEL_ENV_VARS = {
    "DATAKIT_REMBG_MODEL": "cutout --method rembg: rembg model name (isnet-anime, u2net, birefnet-...) or .onnx file",
    "U2NET_HOME": "rembg's model folder, old flat layout (<name>.onnx); when set it also replaces REMBG_HOME",
    "REMBG_HOME": "rembg's data folder: models in REMBG_HOME/models/<name>/<name>.onnx (default ~/.rembg)",
    "DATAKIT_TAGGER": "tag: WD14-format tagger folder (model.onnx + selected_tags.csv) or Hugging Face id",
    "DATAKIT_BG_MODEL": "backgrounds --engine sdxl: diffusers folder, .safetensors checkpoint or Hugging Face id",
    "DATAKIT_BASE_MODEL": "train: base model (diffusers folder, .safetensors/.ckpt checkpoint or Hugging Face id)",
    "HF_HOME": "Hugging Face home (the cache is HF_HOME/hub unless HF_HUB_CACHE is set)",
    "HF_HUB_CACHE": "Hugging Face model cache",
}
# Variables whose value names a model (the others name folders).
MODEL_VALUE_VARS = ("DATAKIT_REMBG_MODEL", "DATAKIT_TAGGER", "DATAKIT_BG_MODEL", "DATAKIT_BASE_MODEL")

LOW_DISK_GB = 10.0
PROBE_TIMEOUT_S = 120


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------


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
        "datakit_path": str(Path(__file__).resolve().parent),
    }


# ---------------------------------------------------------------------------------------------
# torch: which devices exist, and whether a tensor op really runs on them
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# ONNX Runtime: installed distributions, providers offered, and providers that actually run
# ---------------------------------------------------------------------------------------------


def tiny_onnx_model() -> bytes:
    """A one-node graph (Y = X + X, float32 [1, 4]) serialised to bytes, built with the onnx helper API."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"])], "datakit_doctor", [x], [y])
    # An old opset and IR version that every onnxruntime from 1.10 on accepts.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="datakit-doctor")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model.SerializeToString()


def probe_providers(providers: list[str] | None = None) -> list[dict]:
    """Create a session for each provider alone and run it; report which provider really ran.

    onnxruntime falls back to CPU silently when a GPU provider cannot load (missing CUDA/cuDNN/TensorRT
    libraries), so success means the provider is still first in the session's providers and the
    result is right. Meant to run in a child process: it captures the C++ log on file descriptor 2
    to quote the library's own reason for a fallback.
    """
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(2)  # warnings: that is where the fallback reason is logged
    model = tiny_onnx_model()
    names = list(providers or ort.get_available_providers())
    if any(n != "CPUExecutionProvider" for n in names) and hasattr(ort, "preload_dlls"):
        # As datakit's stages do before a GPU session: lets onnxruntime-gpu find the CUDA/cuDNN
        # libraries that pip's nvidia-* packages (or torch) installed. Its chatter is not ours.
        with _captured_stderr(), contextlib.redirect_stdout(io.StringIO()):
            try:
                ort.preload_dlls()
            except Exception:
                pass  # the sessions below report what is missing
    results = []
    for name in names:
        entry: dict = {"provider": name, "works": False, "error": None}
        with _captured_stderr() as log:
            try:
                session = ort.InferenceSession(model, providers=[name])
                used = session.get_providers()
                entry["session_providers"] = used
                out = session.run(None, {"X": np.arange(4, dtype=np.float32).reshape(1, 4)})[0]
                if not used or used[0] != name:
                    entry["error"] = f"fell back to {used[0] if used else 'nothing'}"
                elif not np.allclose(out, [[0, 2, 4, 6]]):
                    entry["error"] = f"wrong result {out.tolist()}"
                else:
                    entry["works"] = True
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                entry["error"] = f"{type(exc).__name__}: {first}"
        reason = _log_reason(log.text)
        if reason and not entry["works"]:
            entry["error"] = f"{entry['error']}: {reason}"
        results.append(entry)
    return results


class _captured_stderr:
    """Redirect file descriptor 2 (where native libraries log) into a temporary file."""

    def __enter__(self):
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()
        return False


def _log_reason(log: str) -> str | None:
    """The most telling line of onnxruntime's log (a missing library, a failed provider)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for keys in (("cannot open shared object", "error loading", "LoadLibrary", "not found"), ("Failed", "Error", "error")):
        for ln in lines:
            if any(k in ln for k in keys):
                # Drop the logger's timestamp/prefix: keep the message after the last '] '.
                msg = ln.rsplit("] ", 1)[-1]
                msg = msg.split("FAIL : ", 1)[-1]  # onnxruntime's ' : 1 : FAIL : ' status prefix
                return msg[:300]
    return None


def onnxruntime_info(probe: bool = True, timeout: float = PROBE_TIMEOUT_S) -> dict:
    """onnxruntime distribution(s), version, providers offered and (probe=True) providers that work."""
    dists = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-silicon"):
        try:
            dists[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
        except Exception:
            pass
    info: dict = {"distributions": dists, "installed": False}
    try:
        import onnxruntime as ort

        info.update(installed=True, version=ort.__version__, device=ort.get_device(),
                    available_providers=list(ort.get_available_providers()))
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
        return info
    if not probe:
        info["probed"] = False
        return info
    info["probed"] = True
    # In a child process: a GPU provider that fails to load can abort or hang the whole interpreter.
    code = "import json, sys; from datakit.doctor import probe_providers; print(json.dumps(probe_providers()))"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=_child_env()
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            info["probe_error"] = f"the probe process exited with {proc.returncode}: {tail}"
        else:
            info["providers"] = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        info["probe_error"] = f"the provider probe did not finish within {timeout:.0f} s"
    except Exception as exc:
        info["probe_error"] = f"{type(exc).__name__}: {exc}"
    if "providers" in info:
        info["working_providers"] = [p["provider"] for p in info["providers"] if p["works"]]
    return info


def _child_env() -> dict:
    """Environment for the probe process: datakit importable even when run from a source tree."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# ---------------------------------------------------------------------------------------------
# Disk and models
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def findings(report: dict) -> list[str]:
    """Problems worth a warning line, derived from the facts gathered."""
    notes = []
    t = report.get("torch", {})
    o = report.get("onnxruntime", {})
    dists = o.get("distributions", {})
    if "onnxruntime" in dists and "onnxruntime-gpu" in dists:
        notes.append("both onnxruntime and onnxruntime-gpu are installed; they overwrite each other's files: "
                     "uninstall both, then install only onnxruntime-gpu")
    if not t.get("installed"):
        notes.append(f"torch cannot be imported ({t.get('error', 'missing')}): backgrounds and train need it")
    elif t.get("cuda_build") is None and not t.get("hip_build") and nvidia_driver_present():
        notes.append("an NVIDIA driver is present but torch is a CPU-only build: install a CUDA build of torch")
    if t.get("cuda_available") and t.get("cuda_works") is False:
        notes.append(f"torch sees CUDA but a tensor op failed on it: {t.get('cuda_error')}")
    if not o.get("installed"):
        notes.append(f"onnxruntime cannot be imported ({o.get('error', 'missing')}): rembg cut-outs and tagging need it")
    elif o.get("probe_error"):
        notes.append(f"could not test the ONNX providers: {o['probe_error']}")
    elif o.get("probed"):
        broken = [p["provider"] for p in o.get("providers", []) if not p["works"]]
        if broken:
            gpu_expected = t.get("cuda_available") or nvidia_driver_present()
            why = "see their errors above" if gpu_expected else "no NVIDIA GPU driver on this machine, so this is expected"
            notes.append(f"ONNX providers offered but not working: {', '.join(broken)} ({why})")
        if t.get("cuda_works") and "CUDAExecutionProvider" not in o.get("working_providers", []):
            notes.append("torch uses the GPU but ONNX models (rembg, taggers) will run on CPU: "
                         "CUDAExecutionProvider does not work (check the onnxruntime-gpu / CUDA / cuDNN versions)")
    for entry in report.get("models", {}).get("environment", []):
        if entry.get("value") and entry.get("found") is False:
            notes.append(f"{entry['variable']}={entry['value']}: {entry['where']}")
    for row in report.get("disk", []):
        if row.get("free_gb") is not None and row["free_gb"] < LOW_DISK_GB:
            notes.append(f"low disk space for {row['what']}: {row['free_gb']} GB free at {row['path']}")
    return notes


def collect(*, probe: bool = True, model_options: list[dict] | None = None, workdir: Path | None = None) -> dict:
    """Gather the whole report as plain JSON-able data (never raises for a missing library)."""
    report: dict = {"system": python_info(), "packages": package_versions()}
    for key, fn in (("torch", torch_info), ("onnxruntime", lambda: onnxruntime_info(probe=probe))):
        try:
            report[key] = fn()
        except Exception as exc:  # last line of defence: the doctor itself must not crash
            report[key] = {"installed": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        report["models"] = models_info(model_options)
    except Exception as exc:
        report["models"] = {"error": f"{type(exc).__name__}: {exc}"}
    report["disk"] = disk_info(
        {"working folder": workdir or Path.cwd(), "Hugging Face cache": hf_cache_dir(), "rembg models": rembg_homes()[0],
         "temporary files": Path(tempfile.gettempdir())}
    )
    report["warnings"] = findings(report)
    return report


def format_report(report: dict) -> str:
    """The report as plain text for a terminal."""
    lines: list[str] = []
    add = lines.append
    s = report["system"]
    add(f"datakit {s['datakit']}  (python {s['python']}, {s['platform']})")
    add(f"  python: {s['executable']}")
    add("")
    add("packages:")
    for name, version in report["packages"].items():
        add(f"  {name:<24} {version or '-'}")
    add("")
    t = report.get("torch", {})
    add("torch:")
    if not t.get("installed"):
        add(f"  not usable: {t.get('error')}")
    else:
        add(f"  version {t['version']}, CUDA build {t.get('cuda_build') or 'none (CPU-only build)'}, {t.get('threads')} CPU threads")
        if t.get("cuda_available"):
            for d in t.get("cuda_devices", []):
                add(f"  cuda:{d['index']}  {d['name']}  {d['memory_gb']} GiB  compute {d['capability']}")
            add(f"  CUDA tensor op: {'works' if t.get('cuda_works') else 'FAILS: ' + str(t.get('cuda_error'))}")
        else:
            add("  CUDA: not available" + (f" ({t['cuda_error']})" if t.get("cuda_error") else ""))
        if t.get("mps_available"):
            add(f"  MPS (Apple GPU): {'works' if t.get('mps_works') else 'FAILS: ' + str(t.get('mps_error'))}")
        else:
            add("  MPS: not available")
    add("")
    o = report.get("onnxruntime", {})
    add("onnxruntime:")
    if not o.get("installed"):
        add(f"  not usable: {o.get('error')}")
    else:
        dists = ", ".join(f"{k} {v}" for k, v in o.get("distributions", {}).items()) or "unknown distribution"
        add(f"  {dists}; device {o.get('device')}")
        add(f"  providers offered: {', '.join(o.get('available_providers', [])) or 'none'}")
        if o.get("probe_error"):
            add(f"  provider test failed: {o['probe_error']}")
        for p in o.get("providers", []):
            add(f"  {p['provider']:<28} {'works' if p['works'] else 'does NOT work: ' + str(p['error'])}")
        if not o.get("probed"):
            add("  (providers not tested: --no-probe)")
    add("")
    m = report.get("models", {})
    add("models (datakit uses a model only when a flag or one of these variables names it):")
    if "error" in m:
        add(f"  could not inspect: {m['error']}")
    for e in m.get("environment", []):
        state = "" if e.get("found") is None else ("  [found]" if e["found"] else "  [MISSING]")
        add(f"  {e['variable']:<20} {e['value'] or '(not set)'}{state}")
        add(f"  {'':<20} {e['purpose']}")
        if e.get("value"):
            add(f"  {'':<20} -> {e['where']}")
    for opt in m.get("options", []):
        env = f" (or ${opt['envvar']})" if opt.get("envvar") else ""
        add(f"  datakit {opt['command']} {opt['option']}{env}: {opt.get('help', '')}")
    if "rembg" in m:
        r = m["rembg"]
        folders = r["home"] if r["home"] == r["legacy_folder"] else f"{r['home']}/models and {r['legacy_folder']}"
        add(f"  rembg models in {folders}: {'none' if not r['models'] else ''}")
        for path in r["models"]:
            add(f"    {path}")
    if "hf_cache" in m:
        h = m["hf_cache"]
        usable = h.get("usable", [])
        state = f"{len(usable)} usable repos, {h['other']} others" if h["exists"] else "missing"
        add(f"  Hugging Face cache {h['path']}: {state}")
        for u in usable:
            add(f"    {u['repo']}  {u['kind']}  {u['size_gb']} GB")
        if m.get("hf_offline"):
            add("  HF_HUB_OFFLINE is set: nothing will be downloaded")
    add("")
    add("disk:")
    for d in report.get("disk", []):
        if "error" in d:
            add(f"  {d['what']:<20} {d['path']}: {d['error']}")
        else:
            add(f"  {d['what']:<20} {d['free_gb']} GB free of {d['total_gb']} GB  ({d['path']})")
    add("")
    if report.get("warnings"):
        add("warnings:")
        for w in report["warnings"]:
            add(f"  - {w}")
    else:
        add("no problems found")
    return "\n".join(lines)
