"""The benchmark plumbing: results JSON -> README table (benchmarks/readme_table.py), the step clock (benchmarks/harness.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import readme_table  # noqa: E402

README = """# tool

## Performance

intro

<!-- benchmarks:begin -->
| stale | table |
<!-- benchmarks:end -->

after
"""


def _result(name: str, rows: list[dict], **extra) -> dict:
    return {"schema": 1, "benchmark": name, "title": name, "date": "2024-05-06T07:08:09Z", "command": f"{name}.py",
            "machine": {"cores": 2, "gpu": None, "load_average": [0.4, 0.3, 0.2]}, "rows": rows, **extra}


def test_table_is_generated_from_results_in_readme_order(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "train.json").write_text(json.dumps(_result("train", [
        {"case": "LoRA | small", "datakit": "3 steps/s", "baseline": "2 steps/s", "goal": "never slower", "result": "1.50x", "met": True}])))
    (results / "cutout.json").write_text(json.dumps(_result("cutout", [
        {"case": "flat", "datakit": "10 img/s", "baseline": "30 img/s", "goal": "ratio <= 2", "result": "3.00", "met": False},
        {"case": "pool", "datakit": "a", "baseline": "b"}], notes=["one note"])))
    (results / "broken.json").write_text("{not json")
    (results / "old.json").write_text(json.dumps({"schema": 0, "rows": []}))
    readme = tmp_path / "README.md"
    readme.write_text(README)

    text = readme_table.merge(README, readme_table.render(readme_table.load_results(results)))
    lines = text.splitlines()
    assert "| stale | table |" not in text
    assert text.startswith("# tool\n\n## Performance\n\nintro\n\n<!-- benchmarks:begin -->\n")
    assert text.endswith("<!-- benchmarks:end -->\n\nafter\n")
    rows = [line for line in lines if line.startswith("| `")]
    # cutout before train (the README's order), whatever the file names sort to; '|' escaped.
    assert rows == [
        "| `cutout.py`: flat | 10 img/s | 30 img/s | ratio <= 2: **3.00** (not met) |",
        "| `cutout.py`: pool | a | b | —: — |",
        "| `train.py`: LoRA \\| small | 3 steps/s | 2 steps/s | never slower: **1.50x** (met) |",
    ]
    assert "- `cutout.py`: 2024-05-06, 2 cores, no GPU, load 0.4; `cutout.py`" in lines
    assert "  - one note" in lines
    assert not any("broken" in line or "old" in line for line in lines)


def test_check_mode_and_missing_markers(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "tag.json").write_text(json.dumps(_result("tag", [
        {"case": "c", "datakit": "d", "baseline": "b", "goal": "g", "result": "r", "met": None}])))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    argv = ["readme_table.py", "--readme", str(readme), "--results", str(results)]
    monkeypatch.setattr(sys, "argv", argv + ["--check"])
    with pytest.raises(SystemExit) as exc:
        readme_table.main()
    assert exc.value.code == 1
    assert readme.read_text() == README  # --check writes nothing
    monkeypatch.setattr(sys, "argv", argv)
    readme_table.main()
    assert "| `tag.py`: c | d | b | g: r |" in readme.read_text()
    monkeypatch.setattr(sys, "argv", argv + ["--check"])
    readme_table.main()  # up to date now: no exit
    with pytest.raises(SystemExit, match="markers"):
        readme_table.merge("# no markers here\n", "table")


def test_quick_results_never_land_in_the_readme_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    row = harness.Row(case="c", datakit="d", baseline="b")
    full = harness.write_results(harness.Results(benchmark="x", title="t", settings={"n": 1}, rows=[row]))
    quick = harness.write_results(harness.Results(benchmark="x", title="t", settings={"n": 1}, rows=[row], quick=True))
    assert full == tmp_path / "x.json"
    assert quick == tmp_path / "quick" / "x.json"
    data = json.loads(full.read_text())
    assert data["schema"] == 1 and data["quick"] is False and data["rows"][0]["case"] == "c"
    assert data["machine"]["cores"] >= 1
    assert [d["benchmark"] for d in readme_table.load_results(tmp_path)] == ["x"]


def test_step_clock_counts_optimizer_steps_and_vae_encoder_calls():
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=4, sample_size=16)
    layer = torch.nn.Linear(3, 1)
    clock = harness.StepClock()
    try:
        with torch.no_grad():
            for _ in range(2):
                vae.encode(torch.zeros(1, 3, 16, 16))
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        for _ in range(4):
            layer(torch.ones(2, 3)).sum().backward()
            opt.step()
        vae.encode(torch.zeros(1, 3, 16, 16))  # after the first step: no longer counted
    finally:
        clock.close()
    s = clock.summary(warmup=1)
    assert s["steps"] == 4
    assert len(s["step_s"]) == 3 and len(s["step_cpu_s"]) == 3
    assert s["vae_encoder_calls"] == 2
    assert s["vae_encoder_s"] > 0 and s["first_step_s"] >= s["vae_encoding_span_s"]


def test_a_benchmark_without_results_is_listed_as_not_measured():
    table = readme_table.render([], ["tag", "cutout"])
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`cutout.py`", "`tag.py`"]
    assert all("not measured yet" in r for r in rows)
