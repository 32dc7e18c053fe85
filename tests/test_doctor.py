"""`datakit doctor`: facts gathered without crashing, providers really probed, models located."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from datakit import doctor

MODEL_VARS = ("DATAKIT_REMBG_MODEL", "U2NET_HOME", "REMBG_HOME", "DATAKIT_TAGGER", "DATAKIT_BG_MODEL", "DATAKIT_BASE_MODEL", "DATAKIT_CLIP_MODEL", "HF_HOME", "HF_HUB_CACHE")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No model variables set; the HF cache and rembg home point into tmp_path."""
    for var in (*MODEL_VARS, "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    return tmp_path


def test_collect_without_probe_is_json_and_complete(clean_env):
    report = doctor.collect(probe=False)
    assert set(report) >= {"system", "packages", "torch", "onnxruntime", "models", "disk", "warnings"}
    json.dumps(report)  # plain data only
    assert report["system"]["datakit"]
    import datakit

    assert report["system"]["datakit_path"] == str(Path(datakit.__file__).resolve().parent)  # the package, not doctor/
    assert report["packages"]["torch"].startswith("2.")
    assert report["torch"]["installed"] is True
    assert report["onnxruntime"]["installed"] is True and report["onnxruntime"]["probed"] is False
    assert "CPUExecutionProvider" in report["onnxruntime"]["available_providers"]
    assert all("free_gb" in d for d in report["disk"])
    variables = [e["variable"] for e in report["models"]["environment"]]
    assert set(variables) == set(MODEL_VARS)
    text = doctor.format_report(report)
    for word in ("torch", "onnxruntime", "DATAKIT_TAGGER", "disk", "Hugging Face cache"):
        assert word in text


def test_tiny_onnx_model_is_valid():
    import onnx

    model = onnx.load_from_string(doctor.tiny_onnx_model())
    assert [n.op_type for n in model.graph.node] == ["Add"]


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cpu_provider_works_and_unknown_provider_does_not():
    results = {r["provider"]: r for r in doctor.probe_providers(["CPUExecutionProvider", "NoSuchExecutionProvider"])}
    assert results["CPUExecutionProvider"]["works"] is True
    assert results["CPUExecutionProvider"]["error"] is None
    assert results["NoSuchExecutionProvider"]["works"] is False
    assert results["NoSuchExecutionProvider"]["error"]


def test_probe_runs_in_a_child_process_and_finds_cpu():
    info = doctor.onnxruntime_info(probe=True)
    assert info["probed"] is True
    assert "probe_error" not in info, info.get("probe_error")
    assert "CPUExecutionProvider" in info["working_providers"]
    # Every offered provider got a verdict, with a reason when it does not work.
    assert [p["provider"] for p in info["providers"]] == info["available_providers"]
    for p in info["providers"]:
        assert p["works"] or p["error"]


def test_gpu_providers_failing_are_reported_with_the_reason():
    import onnxruntime as ort
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers() or torch.cuda.is_available():
        pytest.skip("needs onnxruntime-gpu on a machine without a working GPU")
    result = doctor.probe_providers(["CUDAExecutionProvider"])[0]
    assert result["works"] is False
    assert "fell back" in result["error"] or "Error" in result["error"]


@pytest.mark.gpu
def test_cuda_really_works_on_a_gpu_machine():
    info = doctor.torch_info()
    assert info["cuda_available"] and info["cuda_works"], info.get("cuda_error")
    assert info["cuda_devices"][0]["name"]


def test_missing_libraries_are_reported_not_raised(monkeypatch, clean_env):
    # A None entry in sys.modules makes `import x` raise ImportError.
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    report = doctor.collect(probe=True)
    assert report["torch"]["installed"] is False and "torch" in report["torch"]["error"]
    assert report["onnxruntime"]["installed"] is False
    assert any("torch cannot be imported" in w for w in report["warnings"])
    assert any("onnxruntime cannot be imported" in w for w in report["warnings"])
    assert "not usable" in doctor.format_report(report)


def test_both_onnxruntime_packages_is_a_warning():
    report = {"torch": {"installed": True, "cuda_build": "12.4"},
              "onnxruntime": {"installed": True, "distributions": {"onnxruntime": "1.20", "onnxruntime-gpu": "1.20"}}}
    assert any("both onnxruntime and onnxruntime-gpu" in w for w in doctor.findings(report))


def test_gpu_torch_with_cpu_only_onnx_is_a_warning():
    report = {
        "torch": {"installed": True, "cuda_build": "12.8", "cuda_available": True, "cuda_works": True},
        "onnxruntime": {"installed": True, "distributions": {"onnxruntime-gpu": "1.31"}, "probed": True,
                        "providers": [{"provider": "CUDAExecutionProvider", "works": False, "error": "x"},
                                      {"provider": "CPUExecutionProvider", "works": True, "error": None}],
                        "working_providers": ["CPUExecutionProvider"]},
    }
    notes = doctor.findings(report)
    assert any("ONNX models (rembg, taggers) will run on CPU" in w for w in notes)
    assert any("see their errors above" in w for w in notes)


def test_low_disk_is_a_warning():
    notes = doctor.findings({"disk": [{"what": "working folder", "path": "/x", "free_gb": 1.5, "total_gb": 100}]})
    assert any("low disk space" in w for w in notes)


def _fake_repo(hub, repo_id, files):
    snap = hub / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "0123abcd"
    for name, text in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(text)


def test_hf_cache_scan_classifies_usable_repos(clean_env):
    hub = clean_env / "hub"
    _fake_repo(hub, "someone/tiny-sdxl", {"model_index.json": json.dumps({"_class_name": "StableDiffusionXLPipeline"}),
                                          "unet/config.json": "{}"})
    _fake_repo(hub, "SmilingWolf/wd-tagger", {"model.onnx": "x", "selected_tags.csv": "tag_id,name,category,count\n"})
    _fake_repo(hub, "someone/a-checkpoint", {"model.safetensors": "x"})
    _fake_repo(hub, "someone/just-a-tokenizer", {"tokenizer_config.json": "{}", "vocab.json": "{}"})
    scan = doctor.scan_hf_cache(hub)
    kinds = {u["repo"]: u["kind"] for u in scan["usable"]}
    assert kinds["someone/tiny-sdxl"] == "diffusers StableDiffusionXLPipeline"
    assert kinds["SmilingWolf/wd-tagger"].startswith("WD14")
    assert kinds["someone/a-checkpoint"] == "single-file checkpoint"
    assert "someone/just-a-tokenizer" not in kinds and scan["other"] == 1


def test_model_variables_are_resolved(clean_env, monkeypatch):
    hub, u2net = clean_env / "hub", clean_env / "u2net"
    _fake_repo(hub, "org/base", {"model_index.json": "{}"})
    u2net.mkdir()
    (u2net / "isnet-anime.onnx").write_bytes(b"onnx")
    tagger = clean_env / "tagger"
    tagger.mkdir()
    (tagger / "model.onnx").write_bytes(b"x")
    (tagger / "selected_tags.csv").write_text("tag_id,name,category,count\n")
    monkeypatch.setenv("DATAKIT_REMBG_MODEL", "isnet-anime")
    monkeypatch.setenv("DATAKIT_TAGGER", str(tagger))
    monkeypatch.setenv("DATAKIT_BASE_MODEL", "org/base")
    monkeypatch.setenv("DATAKIT_BG_MODEL", str(clean_env / "missing.safetensors"))
    report = doctor.collect(probe=False)
    env = {e["variable"]: e for e in report["models"]["environment"]}
    assert env["DATAKIT_REMBG_MODEL"]["found"] is True and "isnet-anime.onnx" in env["DATAKIT_REMBG_MODEL"]["where"]
    assert env["DATAKIT_TAGGER"]["found"] is True and "WD14" in env["DATAKIT_TAGGER"]["where"]
    assert env["DATAKIT_BASE_MODEL"]["found"] is True and "Hugging Face cache" in env["DATAKIT_BASE_MODEL"]["where"]
    assert env["DATAKIT_BG_MODEL"]["found"] is False
    assert env["U2NET_HOME"]["found"] is True
    assert report["models"]["rembg"]["models"] == [str(u2net / "isnet-anime.onnx")]
    assert any(w.startswith("DATAKIT_BG_MODEL=") for w in report["warnings"])
    assert not any(w.startswith("DATAKIT_TAGGER=") for w in report["warnings"])


def test_unknown_hf_id_is_reported_as_not_downloaded(clean_env, monkeypatch):
    monkeypatch.setenv("DATAKIT_BASE_MODEL", "nobody/nothing")
    env = {e["variable"]: e for e in doctor.models_info()["environment"]}
    assert env["DATAKIT_BASE_MODEL"]["found"] is False
    assert "not downloaded" in env["DATAKIT_BASE_MODEL"]["where"]


def test_cli_json_exit_zero(clean_env):
    from datakit.cli.main import app

    result = CliRunner().invoke(app, ["doctor", "--json", "--no-probe"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["onnxruntime"]["probed"] is False
    assert isinstance(report["models"]["options"], list)


def test_cli_text_report(clean_env):
    from datakit.cli.main import app

    result = CliRunner().invoke(app, ["doctor", "--no-probe"])
    assert result.exit_code == 0, result.output
    assert "onnxruntime:" in result.stdout and "torch:" in result.stdout and "disk:" in result.stdout


def test_model_options_are_found_on_other_commands():
    from datakit.cli.doctor import _model_options

    app = typer.Typer()

    @app.command("fake")
    def fake(model: str = typer.Option(None, "--model", envvar="DATAKIT_FAKE_MODEL", help="The model."),
             seed: int = typer.Option(0, "--seed", help="Seed."),
             ckpt: bool = typer.Option(False, "--gradient-checkpointing", help="Not a model.")) -> None:
        """A fake stage."""

    @app.command("other")
    def other(size: int = typer.Option(1, "--size", help="Size.")) -> None:
        """Another."""

    opts = _model_options(app)
    assert opts == [{"command": "fake", "option": "--model", "envvar": "DATAKIT_FAKE_MODEL", "help": "The model."}]


def test_rembg_model_in_the_new_layout(clean_env, monkeypatch):
    """Without U2NET_HOME rembg keeps models in REMBG_HOME/models/<name>/<name>.onnx."""
    monkeypatch.delenv("U2NET_HOME")
    home = clean_env / "rembg-home"
    (home / "models" / "u2net").mkdir(parents=True)
    (home / "models" / "u2net" / "u2net.onnx").write_bytes(b"onnx")
    monkeypatch.setenv("REMBG_HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(clean_env / "xdg"))
    assert doctor.rembg_homes() == (home, clean_env / "xdg" / ".u2net")
    monkeypatch.setenv("DATAKIT_REMBG_MODEL", "u2net")
    env = {e["variable"]: e for e in doctor.models_info()["environment"]}
    assert env["DATAKIT_REMBG_MODEL"]["found"] is True
    monkeypatch.setenv("DATAKIT_REMBG_MODEL", "isnet-anime")
    env = {e["variable"]: e for e in doctor.models_info()["environment"]}
    assert env["DATAKIT_REMBG_MODEL"]["found"] is False and "not downloaded" in env["DATAKIT_REMBG_MODEL"]["where"]
    assert doctor.rembg_model_files() == [home / "models" / "u2net" / "u2net.onnx"]
