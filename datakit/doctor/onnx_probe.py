"""ONNX Runtime: the distributions installed, the providers offered, and those that really run (in a child process)."""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


PROBE_TIMEOUT_S = 120


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
    code = ("import json; from datakit.doctor.onnx_probe import probe_providers; "
            "print(json.dumps(probe_providers()))")
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
    root = str(Path(__file__).resolve().parents[2])  # the folder holding datakit/
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
