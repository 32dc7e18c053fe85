"""The doctor's report: gather every probe's facts, derive the warnings, format them for a terminal."""

from __future__ import annotations

import tempfile
from pathlib import Path

from datakit.doctor.model_locations import hf_cache_dir, models_info, rembg_homes
from datakit.doctor.onnx_probe import onnxruntime_info
from datakit.doctor.system import disk_info, nvidia_driver_present, package_versions, python_info, torch_info


LOW_DISK_GB = 10.0


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
