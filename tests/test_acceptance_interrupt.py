"""Acceptance: a stage interrupted half-way (Ctrl-C) stops promptly, leaves nothing a re-run trusts
blindly, and the re-run reuses the items that were finished before the interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from datakit.manifest import read_manifest
from datakit.stage import StageRun, Task, TaskResult, run_simple_stage
from datakit.imageio import write_text_atomic


def _write_or_interrupt(task: Task, shared: dict) -> TaskResult:
    """Worker: writes one file, or raises KeyboardInterrupt at the chosen item (as Ctrl-C would)."""
    if task.key == shared.get("interrupt_at"):
        raise KeyboardInterrupt
    name = f"{task.key}.txt"
    write_text_atomic(Path(shared["out"]) / name, task.key)
    return TaskResult(key=task.key, outputs=[name])


def _run(out: Path, interrupt_at: str | None) -> dict:
    tasks = [Task(key=f"item{i}", params={"i": i}) for i in range(6)]
    run = StageRun("demo", out, {"option": 1})
    return run_simple_stage(run, tasks, _write_or_interrupt, workers=1, shared={"out": str(out), "interrupt_at": interrupt_at})


def test_interrupted_run_saves_progress_and_rerun_reuses_it(tmp_path):
    out = tmp_path / "out"
    try:
        _run(out, interrupt_at="item3")
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover - the worker always raises at item3
        raise AssertionError("the interruption did not propagate")
    assert not (out / "datakit.json").exists()  # not complete: downstream must not trust it
    done = {r["key"] for r in read_manifest(out)}
    assert done == {"item0", "item1", "item2"}
    info = _run(out, interrupt_at=None)
    assert info.counts.reused == 3 and info.counts.processed == 3
    assert (out / "datakit.json").is_file()


def test_ctrl_c_on_a_pooled_stage_exits_130_and_the_rerun_completes(tmp_path):
    """A real `datakit backgrounds` with 2 pool workers, interrupted with SIGINT to its process group
    (what Ctrl-C in a terminal does): it must exit 130 rather than hang in the pool's shutdown."""
    out = tmp_path / "bg"
    cmd = [sys.executable, "-m", "datakit", "backgrounds", str(out), "--count", "300", "--size", "128", "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while not any(out.glob("bg*.png")) and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # a hang is the bug this test is about
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.returncode == 0:  # the whole run beat the signal: nothing interrupted to check
        return
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert not (out / "datakit.json").exists()
    done = subprocess.run(cmd, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    rows = read_manifest(out)
    assert len(rows) == 300 and all(r["status"] == "ok" for r in rows)
    assert all((out / r["file"]).is_file() for r in rows)


def test_interrupted_tagging_keeps_captions_and_probabilities(tmp_path, monkeypatch):
    """`datakit tag` runs its own batched loop: an interruption there saves the manifest and the
    stored probabilities too, so the re-run reuses finished items and --rethreshold still covers all."""
    from PIL import Image

    from datakit.console import Reporter
    from datakit.stages import tag as tag_stage
    from datakit.stages.tag import TagConfig, run_tag
    from test_wd14 import build_tagger

    model = build_tagger(tmp_path / "wd14")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 255 - 40 * i, 0)).save(src / f"img{i}.png")
    out = tmp_path / "out"
    real_safe = tag_stage._safe
    calls = {"n": 0}

    def interrupting_safe(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_safe(*args, **kwargs)

    monkeypatch.setattr(tag_stage, "_safe", interrupting_safe)
    cfg = dict(input_dir=src, out_dir=out, model=str(model), batch_size=2, workers=1)
    try:
        run_tag(TagConfig(**cfg), Reporter(quiet=True))
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover
        raise AssertionError("the interruption did not propagate")
    assert not (out / "datakit.json").exists()
    assert len(read_manifest(out)) == 3
    monkeypatch.setattr(tag_stage, "_safe", real_safe)
    info = run_tag(TagConfig(**cfg), Reporter(quiet=True))
    assert info.counts.reused == 3 and info.counts.processed == 3
    again = run_tag(TagConfig(**cfg, general_threshold=0.2, rethreshold=True), Reporter(quiet=True))
    assert again.counts.out == 6  # every item's probabilities were stored, the interrupted ones too


def test_interrupted_diffusion_backgrounds_keep_the_images_made(tmp_path, monkeypatch):
    """The sdxl engine's own batch loop: Ctrl-C after some batches keeps their rows, so the re-run
    does not regenerate (expensive) images; and a model that fails to load leaves a finished
    folder finished."""
    from datakit.backgrounds import diffusion_engine as engine
    from datakit.console import Reporter
    from datakit.errors import ModelNotFoundError
    from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds

    calls = {"n": 0, "interrupt_at": 3}

    def fake_batch(pipe, batch, cfg, steps, guidance):
        calls["n"] += 1
        if calls["n"] == calls["interrupt_at"]:
            raise KeyboardInterrupt
        results = []
        for task in batch:
            name = f"{task.payload['name']}.txt"
            write_text_atomic(Path(cfg.out_dir) / name, task.params["prompt"])
            results.append(TaskResult(key=task.key, outputs=[name]))
        return results

    monkeypatch.setattr(engine, "load_for_generation", lambda cfg, device, reporter: (object(), "sdxl"))
    monkeypatch.setattr(engine, "_generate_batch", fake_batch)
    out = tmp_path / "bg"
    cfg = dict(out_dir=out, count=5, engine="sdxl", model="some/model", width=64, height=64, batch_size=1, device="cpu")
    try:
        run_backgrounds(BackgroundsConfig(**cfg), Reporter(quiet=True))
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover
        raise AssertionError("the interruption did not propagate")
    assert len(read_manifest(out)) == 2 and not (out / "datakit.json").exists()
    calls.update(n=0, interrupt_at=None)
    info = run_backgrounds(BackgroundsConfig(**cfg), Reporter(quiet=True))
    assert info.counts.reused == 2 and calls["n"] == 3

    def missing(cfg, device, reporter):
        raise ModelNotFoundError("model not found: typo")

    monkeypatch.setattr(engine, "load_for_generation", missing)
    try:
        run_backgrounds(BackgroundsConfig(**cfg, force=True), Reporter(quiet=True))
    except ModelNotFoundError:
        pass
    assert (out / "datakit.json").is_file()  # still the finished folder it was
