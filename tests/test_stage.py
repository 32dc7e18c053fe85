"""The stage contract, proven on a tiny stage built here on the foundation (datakit.stage).

The `invert` stage below follows docs/architecture.md to the letter: discover the inputs, one Task
per item, a module-level worker (it runs in pool processes), per-item seeds, atomic writes, a
caption side file, run_simple_stage. Each test then checks one promise of the contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit import stage as stage_mod
from datakit.console import Reporter
from datakit.errors import EXIT_OK, EXIT_PARTIAL, EXIT_RUNTIME, StageError, UsageError
from datakit.imageio import TMP_MARK, link_or_copy, open_image, save_png_array_atomic, write_text_atomic
from datakit.inputs import discover
from datakit.results import Carry, Counts, ItemProblem, StageResult
from datakit.manifest import read_manifest, read_stage_info
from datakit.seeding import item_rng, item_seed
from datakit.stage import StageRun, Task, TaskResult, exit_code_for, parallel_map, run_simple_stage

# ---------------------------------------------------------------------------------------------
# A tiny stage: invert each image, add seeded noise, pass the caption through
# ---------------------------------------------------------------------------------------------


def invert_one(task: Task, shared: dict) -> TaskResult:
    """Worker (module level so pool processes can import it)."""
    if shared.get("log"):
        with open(shared["log"], "a", encoding="utf-8") as fh:  # one line per call, across processes
            fh.write(task.key + "\n")
    if task.key == shared.get("explode"):
        raise RuntimeError("boom")
    loaded = open_image(task.payload["path"])  # ImageError -> the item is skipped
    arr = np.asarray(loaded.image.convert("RGB")).astype(np.int16)
    rng = np.random.default_rng(task.seed)
    noise = rng.integers(0, shared["strength"] + 1, arr.shape, dtype=np.int16)
    out = np.clip(255 - arr - noise, 0, 255).astype(np.uint8)
    stem = task.params["stem"]
    outputs = [f"{stem}.png"]
    save_png_array_atomic(out, Path(shared["out"]) / outputs[0])
    if task.payload.get("caption"):
        write_text_atomic(Path(shared["out"]) / f"{stem}.txt", Path(task.payload["caption"]).read_text(encoding="utf-8"))
        outputs.append(f"{stem}.txt")
    return TaskResult(key=task.key, outputs=outputs, row={"noise": int(noise.sum())}, warnings=loaded.notes)


def link_one(task: Task, shared: dict) -> TaskResult:
    """Worker of a pass-through stage: unchanged images are hard-linked, never re-encoded."""
    open_image(task.payload["path"])  # still validated
    name = f"{task.params['stem']}{Path(task.payload['path']).suffix}"
    how = link_or_copy(task.payload["path"], Path(shared["out"]) / name)
    return TaskResult(key=task.key, outputs=[name], row={"how": how})


def run_invert(in_dir, out_dir, *, seed=0, workers=1, force=False, strength=2, reporter=None, carry=None,
               log=None, explode=None, fn=invert_one, stage="invert"):
    inputs = discover(in_dir)
    tasks = [
        Task(key=i.key, inputs=[i.path] + ([i.caption] if i.caption else []), params={"stem": i.stem},
             payload={"path": str(i.path), "caption": str(i.caption) if i.caption else None}, source=i.key)
        for i in inputs.items
    ]
    config = {"strength": strength, "seed": seed, "workers": workers, "force": force}
    run = StageRun(stage, out_dir, config, inputs_dir=in_dir, upstream=inputs.upstream, force=force,
                   reporter=reporter or Reporter(quiet=True), seed=seed, pre_skipped=inputs.skipped)
    shared = {"out": str(out_dir), "strength": strength, "log": str(log) if log else None, "explode": explode}
    return run_simple_stage(run, tasks, fn, workers=workers, shared=shared, carry=carry)


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


def _noise_image(path: Path, seed: int, size=(24, 16)) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    """IN with three images (one captioned)."""
    d = tmp_path / "in"
    d.mkdir()
    for k, name in enumerate(["a.png", "b.png", "c.png"]):
        _noise_image(d / name, k)
    (d / "a.txt").write_text("solo, white background", encoding="utf-8")
    return d


def _snapshot(folder: Path) -> dict:
    """Every file under folder: name -> (bytes hash, mtime)."""
    return {
        str(p.relative_to(folder)): (hashlib.blake2b(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _calls(log: Path) -> list[str]:
    return sorted(log.read_text().split()) if log.exists() else []


def _file_hashes(folder: Path, pattern="*.png") -> dict:
    return {p.name: hashlib.blake2b(p.read_bytes()).hexdigest() for p in sorted(folder.glob(pattern))}


# ---------------------------------------------------------------------------------------------
# Outputs, manifest and datakit.json
# ---------------------------------------------------------------------------------------------


def test_first_run_writes_outputs_manifest_and_info(images, tmp_path):
    out = tmp_path / "out"
    info = run_invert(images, out, seed=7)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a.txt", "b.png", "c.png", "datakit.json", "manifest.jsonl"]
    assert (out / "a.txt").read_text(encoding="utf-8") == "solo, white background"
    rows = read_manifest(out)
    assert [r["key"] for r in rows] == ["a.png", "b.png", "c.png"]
    a = rows[0]
    assert a["file"] == "a.png" and a["outputs"] == ["a.png", "a.txt"] and a["status"] == "ok"
    assert a["source"] == "a.png" and a["seed"] == item_seed(7, "a.png") and a["params"] == {"stem": "a"}
    assert len(a["fingerprint"]) == 32 and "noise" in a and a["warnings"] == []
    saved = read_stage_info(out)
    assert saved == json.loads((out / "datakit.json").read_text(encoding="utf-8"))
    assert saved["stage"] == "invert" and saved["config"]["strength"] == 2 and saved["datakit_version"]
    assert saved["counts"] == {"in": 3, "out": 3, "reused": 0, "processed": 3, "skipped": 0, "failed": 0}
    assert saved["input"] == str(images) and saved["output"] == str(out)
    assert "total_s" in saved["timings"] and saved["skipped"] == [] and saved["failed"] == []
    assert info.counts.to_json() == saved["counts"] and exit_code_for(info) == EXIT_OK


def test_datakit_json_is_written_last(images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    seen = {}
    original = stage_mod.write_stage_info

    def spy(folder, info):
        seen["files_before"] = sorted(p.name for p in Path(folder).iterdir())
        original(folder, info)

    monkeypatch.setattr(stage_mod, "write_stage_info", spy)
    run_invert(images, out)
    assert "manifest.jsonl" in seen["files_before"] and "c.png" in seen["files_before"]
    assert "datakit.json" not in seen["files_before"]


def test_inputs_are_never_modified(images, tmp_path):
    _noise_image(images / "d.jpg", 9)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    before = _snapshot(images)
    run_invert(images, tmp_path / "out")
    run_invert(images, tmp_path / "out", force=True, workers=2)
    assert _snapshot(images) == before


def test_out_must_differ_from_in_and_be_a_folder(images, tmp_path):
    with pytest.raises(UsageError, match="OUT must differ from IN"):
        run_invert(images, images)
    with pytest.raises(UsageError, match="OUT must differ from IN"):
        run_invert(images, images / ".." / images.name)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        run_invert(images, f)


def test_empty_input_folder(tmp_path):
    (tmp_path / "in").mkdir()
    info = run_invert(tmp_path / "in", tmp_path / "out")
    assert info.counts.in_ == 0 and info.counts.out == 0 and exit_code_for(info) == EXIT_OK
    assert (tmp_path / "out" / "datakit.json").is_file() and read_manifest(tmp_path / "out") == []
    again = run_invert(tmp_path / "in", tmp_path / "out")
    assert again.nothing_to_do is True


def test_duplicate_task_keys_are_an_internal_error(tmp_path):
    run = StageRun("x", tmp_path / "out", {})
    with pytest.raises(StageError, match="duplicate task keys"):
        run.plan([Task(key="a"), Task(key="a")])


# ---------------------------------------------------------------------------------------------
# Skip-if-unchanged, --force, partial redo
# ---------------------------------------------------------------------------------------------


def test_rerun_does_no_work_and_leaves_datakit_json_untouched(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    assert _calls(log) == ["a.png", "b.png", "c.png"]
    before = _snapshot(out)
    info = run_invert(images, out, log=log)
    assert _calls(log) == ["a.png", "b.png", "c.png"]  # no new calls
    assert info.nothing_to_do is True and info.counts.processed == 0 and info.counts.reused == 3
    assert _snapshot(out) == before  # Make sees nothing new
    assert exit_code_for(info) == EXIT_OK


def test_volatile_options_do_not_invalidate(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log, workers=1)
    info = run_invert(images, out, log=log, workers=2)
    assert info.nothing_to_do is True and len(_calls(log)) == 3


def test_changed_input_redoes_only_that_item(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    old = _file_hashes(out)
    _noise_image(images / "b.png", 42)
    info = run_invert(images, out, log=log)
    assert _calls(log) == ["a.png", "b.png", "b.png", "c.png"]
    assert info.counts.processed == 1 and info.counts.reused == 2
    new = _file_hashes(out)
    assert new["a.png"] == old["a.png"] and new["c.png"] == old["c.png"] and new["b.png"] != old["b.png"]


def test_changed_caption_redoes_its_item(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    (images / "a.txt").write_text("solo, smile", encoding="utf-8")
    info = run_invert(images, out, log=log)
    assert info.counts.processed == 1 and (out / "a.txt").read_text(encoding="utf-8") == "solo, smile"


def test_changed_config_redoes_everything(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log, strength=2)
    info = run_invert(images, out, log=log, strength=5)
    assert info.counts.processed == 3 and read_stage_info(out)["config"]["strength"] == 5


def test_force_redoes_everything(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    before = _file_hashes(out)
    info = run_invert(images, out, log=log, force=True)
    assert len(_calls(log)) == 6 and info.counts.processed == 3 and info.counts.reused == 0
    assert _file_hashes(out) == before  # same seed, same bytes


def test_deleted_output_is_redone(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    (out / "c.png").unlink()
    info = run_invert(images, out, log=log)
    assert info.counts.processed == 1 and (out / "c.png").is_file()


def test_new_input_is_added_without_redoing_others(images, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    _noise_image(images / "d.png", 3)
    info = run_invert(images, out, log=log)
    assert info.counts.to_json() == {"in": 4, "out": 4, "reused": 3, "processed": 1, "skipped": 0, "failed": 0}


def test_interrupted_run_is_not_trusted(images, tmp_path):
    """A run killed half-way left a temp file and no datakit.json: the next run cleans up and finishes."""
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(images, out, log=log)
    run = StageRun("invert", out, {"strength": 9}, inputs_dir=images)
    run.invalidate()  # what a run does before its first write
    assert not (out / "datakit.json").exists()
    (out / f".b.png{TMP_MARK}x1y2").write_bytes(b"half-written")
    info = run_invert(images, out, log=log)  # same config as the finished run
    assert not info.nothing_to_do  # items are reused, but datakit.json is written again
    assert info.counts.reused == 3 and (out / "datakit.json").is_file()
    assert not any(TMP_MARK in p.name for p in out.iterdir())


# ---------------------------------------------------------------------------------------------
# Stale outputs
# ---------------------------------------------------------------------------------------------


def test_outputs_of_removed_inputs_are_deleted_and_nothing_else(images, tmp_path):
    out = tmp_path / "out"
    run_invert(images, out)
    (out / "my-notes.md").write_text("mine")
    (images / "a.png").unlink()
    info = run_invert(images, out)
    assert sorted(info.removed_stale) == ["a.png", "a.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "c.png", "datakit.json", "manifest.jsonl", "my-notes.md"]
    assert [r["key"] for r in read_manifest(out)] == ["b.png", "c.png"]
    assert info.counts.in_ == 2 and info.counts.out == 2


def test_caption_removed_upstream_removes_the_copied_caption(images, tmp_path):
    out = tmp_path / "out"
    run_invert(images, out)
    (images / "a.txt").unlink()
    info = run_invert(images, out)
    assert info.removed_stale == ["a.txt"] and (out / "a.png").is_file() and not (out / "a.txt").exists()


# ---------------------------------------------------------------------------------------------
# Bad inputs: skipped, named, never crash; exit code 3
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_folder(tmp_path) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    _noise_image(d / "good.png", 1)
    _noise_image(d / "a.png", 2)
    _noise_image(d / "a.jpg", 3)  # same stem as a.png: both must survive
    (d / "zero.png").write_bytes(b"")
    data = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    (d / "text.jpg").write_text("not an image")
    (d / "notes.pdf").write_bytes(b"%PDF-1.4 not an image either")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(d / "cmyk.jpg")
    _noise_image(d / "ünïcødé 猫.png", 4)
    return d


def test_bad_inputs_are_skipped_and_named(bad_folder, tmp_path):
    out = tmp_path / "out"
    before = _snapshot(bad_folder)
    info = run_invert(bad_folder, out, workers=2)
    skipped = {s.source: s.reason for s in info.skipped}
    assert set(skipped) == {"zero.png", "truncated.png", "text.jpg", "notes.pdf"}
    assert "zero-byte" in skipped["zero.png"] and "truncated" in skipped["truncated.png"]
    assert "not an image" in skipped["text.jpg"]
    made = sorted(p.name for p in out.glob("*.png"))
    assert made == ["a_jpg.png", "a_png.png", "cmyk.png", "good.png", "ünïcødé 猫.png"]
    assert info.counts.skipped == 4 and info.counts.out == 5 and info.counts.failed == 0
    rows = {r["key"]: r for r in read_manifest(out)}
    assert rows["zero.png"]["status"] == "skipped" and rows["zero.png"]["file"] is None and rows["zero.png"]["reason"]
    assert any("CMYK" in w for w in rows["cmyk.jpg"]["warnings"])
    assert exit_code_for(info) == EXIT_PARTIAL
    assert _snapshot(bad_folder) == before


def test_skipped_items_stay_skipped_on_rerun(bad_folder, tmp_path):
    out, log = tmp_path / "out", tmp_path / "calls.log"
    run_invert(bad_folder, out, log=log)
    n = len(_calls(log))
    info = run_invert(bad_folder, out, log=log)
    assert len(_calls(log)) == n and info.nothing_to_do is True
    assert exit_code_for(info) == EXIT_PARTIAL and len(info.skipped) == 4  # still named, still exit 3


def test_repaired_input_is_picked_up(bad_folder, tmp_path):
    out = tmp_path / "out"
    run_invert(bad_folder, out)
    _noise_image(bad_folder / "zero.png", 5)
    info = run_invert(bad_folder, out)
    assert info.counts.processed == 1 and (out / "zero.png").is_file() and len(info.skipped) == 3


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    _noise_image(d / "small.png", 1, size=(10, 10))
    _noise_image(d / "big.png", 2, size=(60, 60))
    monkeypatch.setenv("DATAKIT_MAX_PIXELS", "1000")  # the pool workers inherit it
    info = run_invert(d, tmp_path / "out", workers=2)
    assert [s.source for s in info.skipped] == ["big.png"]
    assert "DATAKIT_MAX_PIXELS" in info.skipped[0].reason


def test_a_crashing_item_fails_alone(images, tmp_path):
    out = tmp_path / "out"
    info = run_invert(images, out, explode="b.png", workers=2)
    assert [f.source for f in info.failed] == ["b.png"]
    assert "RuntimeError: boom" in info.failed[0].reason and "test_stage.py" in info.failed[0].reason
    assert info.counts.out == 2 and exit_code_for(info) == EXIT_PARTIAL
    # A failed item is retried on the next run (unlike a skipped one, it may be a transient error).
    again = run_invert(images, out)
    assert again.counts.processed == 1 and again.failed == [] and exit_code_for(again) == EXIT_OK


def test_missing_upstream_file_is_skipped_and_named(images, tmp_path):
    mid, out = tmp_path / "mid", tmp_path / "out"
    run_invert(images, mid)
    (mid / "b.png").unlink()
    info = run_invert(mid, out)
    assert info.skipped == [ItemProblem("b.png", "listed in the upstream manifest but missing")]
    assert exit_code_for(info) == EXIT_PARTIAL and info.counts.in_ == 3


# ---------------------------------------------------------------------------------------------
# Seeds and determinism across worker counts
# ---------------------------------------------------------------------------------------------


def test_item_seed_depends_on_seed_and_key_only():
    assert item_seed(1, "a.png") == item_seed(1, "a.png")
    assert item_seed(1, "a.png") != item_seed(2, "a.png") != item_seed(1, "b.png")
    assert 0 <= item_seed(123, "ü.png") < 2**63
    assert item_rng(5, "k").integers(0, 1 << 30) == item_rng(5, "k").integers(0, 1 << 30)


def test_outputs_identical_for_any_worker_count_and_order(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for k in range(6):
        _noise_image(d / f"img{k}.png", k)
    runs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}"
        run_invert(d, out, seed=11, workers=workers, strength=40)
        runs[workers] = _file_hashes(out)
    assert runs[1] == runs[2] == runs[3] and len(runs[1]) == 6
    rows = {w: {r["key"]: (r["seed"], r["noise"]) for r in read_manifest(tmp_path / f"out{w}")} for w in (1, 2)}
    assert rows[1] == rows[2]
    # Tasks run in a different order give the same per-item results.
    shared = {"out": str(tmp_path / "rev"), "strength": 40}
    (tmp_path / "rev").mkdir()
    tasks = [Task(key=p.name, params={"stem": p.stem}, payload={"path": str(p), "caption": None}, seed=item_seed(11, p.name))
             for p in sorted(d.iterdir(), reverse=True)]
    list(parallel_map(invert_one, tasks, workers=2, shared=shared))
    assert _file_hashes(tmp_path / "rev") == runs[1]


def test_seed_changes_the_output(images, tmp_path):
    run_invert(images, tmp_path / "s1", seed=1, strength=40)
    run_invert(images, tmp_path / "s2", seed=2, strength=40)
    assert _file_hashes(tmp_path / "s1") != _file_hashes(tmp_path / "s2")


def test_renamed_item_gets_a_new_seed(images, tmp_path):
    out = tmp_path / "out"
    run_invert(images, out, strength=40)
    first = read_manifest(out)[2]
    (images / "c.png").rename(images / "z.png")
    run_invert(images, out, strength=40)
    rows = {r["key"]: r for r in read_manifest(out)}
    assert "c.png" not in rows and rows["z.png"]["seed"] != first["seed"] and not (out / "c.png").exists()


def test_parallel_map_in_process_and_pool_agree(images, tmp_path):
    tasks = [Task(key=p.name, params={"stem": p.stem}, payload={"path": str(p), "caption": None}, seed=3)
             for p in sorted(images.glob("*.png"))]
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"pm{workers}"
        out.mkdir()
        res = list(parallel_map(invert_one, tasks, workers=workers, shared={"out": str(out), "strength": 9}))
        results[workers] = {r.key: (r.status, r.outputs, r.row) for r in res}
        assert all(r.seconds >= 0 for r in res)
    assert results[1] == results[2]


# ---------------------------------------------------------------------------------------------
# Hard links, carry, GPU-style manual loop
# ---------------------------------------------------------------------------------------------


def test_unchanged_images_are_hard_linked(images, tmp_path):
    out = tmp_path / "out"
    info = run_invert(images, out, fn=link_one, stage="passthrough", workers=2)
    assert info.counts.out == 3
    for name in ("a.png", "b.png", "c.png"):
        assert os.path.samefile(images / name, out / name)
    assert {r["how"] for r in read_manifest(out)} == {"link"}
    # The link survives a no-op re-run and the input is untouched.
    assert run_invert(images, out, fn=link_one, stage="passthrough").nothing_to_do is True


def test_carry_flows_downstream(images, tmp_path):
    mid, out = tmp_path / "mid", tmp_path / "out"
    run_invert(images, mid, carry=Carry(trigger="sail_kun", keep_tokens=1))
    assert read_stage_info(mid)["carry"] == {"trigger": "sail_kun", "keep_tokens": 1}
    run_invert(mid, out)
    assert read_stage_info(out)["carry"] == {"trigger": "sail_kun", "keep_tokens": 1}
    run_invert(mid, tmp_path / "out2", carry=Carry(keep_tokens=2))  # no trigger: the upstream one stays
    assert read_stage_info(tmp_path / "out2")["carry"] == {"trigger": "sail_kun", "keep_tokens": 2}


def test_manual_loop_for_batched_stages(images, tmp_path):
    """GPU stages plan, check nothing_to_do, invalidate, record results themselves, then finish."""
    out = tmp_path / "out"

    def one_pass():
        inputs = discover(images)
        tasks = [Task(key=i.key, inputs=[i.path], params={"stem": i.stem}) for i in inputs.items]
        run = StageRun("batched", out, {"batch": 2}, inputs_dir=images, seed=0)
        todo = run.plan(tasks)
        if not todo and run.nothing_to_do():
            return run.summary_from_previous(BatchedResult), 0
        run.invalidate()
        for t in todo:
            (out / f"{t.params['stem']}.out").write_text(str(t.seed))
            run.record(t, TaskResult(key=t.key, outputs=[f"{t.params['stem']}.out"]))
        return run.finish(BatchedResult(device="cpu")), len(todo)

    info, done = one_pass()
    assert done == 3 and info.device == "cpu" and info.counts.out == 3
    assert read_stage_info(out)["device"] == "cpu"  # a stage's own fields are datakit.json keys
    info, done = one_pass()
    assert done == 0 and info.nothing_to_do is True and info.device == "cpu" and info.counts.reused == 3


@dataclasses.dataclass(kw_only=True)
class BatchedResult(StageResult):
    device: str = ""


def test_a_stage_without_a_result_type_of_its_own_gets_the_common_one(images, tmp_path):
    """finish() and summary_from_previous() without a type: a plain StageResult, the same as datakit.json."""
    def one_pass():
        run = StageRun("plain", tmp_path / "out", {}, inputs_dir=images)
        tasks = [Task(key=i.key, inputs=[i.path], params={"stem": i.stem}) for i in discover(images).items]
        todo = run.plan(tasks)
        if not todo and run.nothing_to_do():
            return run.summary_from_previous()
        run.invalidate()
        for t in todo:
            (run.out / f"{t.params['stem']}.out").write_text("x")
            run.record(t, TaskResult(key=t.key, outputs=[f"{t.params['stem']}.out"]))
        return run.finish()

    first = one_pass()
    assert type(first) is StageResult and first.to_json() == read_stage_info(tmp_path / "out") and first.counts.out == 3
    again = one_pass()
    assert type(again) is StageResult and again.nothing_to_do is True and again.counts.reused == 3
    assert again.stage == "plain" and again.extra == {}


def test_progress_bar_and_warnings_do_not_break_quiet_runs(images, tmp_path, capsys):
    reporter = Reporter(quiet=True)
    run_invert(images, tmp_path / "out", reporter=reporter)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    "counts,code",
    [
        ({"in": 3, "out": 3, "skipped": 0, "failed": 0}, EXIT_OK),
        ({"in": 0, "out": 0, "skipped": 0, "failed": 0}, EXIT_OK),
        ({"in": 3, "out": 2, "skipped": 1, "failed": 0}, EXIT_PARTIAL),
        ({"in": 3, "out": 2, "skipped": 0, "failed": 1}, EXIT_PARTIAL),
        ({"in": 2, "out": 0, "skipped": 2, "failed": 0}, EXIT_PARTIAL),  # only bad inputs: still "skipped"
        ({"in": 2, "out": 0, "skipped": 0, "failed": 2}, EXIT_RUNTIME),  # every item crashed: the work failed
    ],
)
def test_exit_codes_from_counts(counts, code):
    assert exit_code_for(StageResult(counts=Counts.from_json(counts))) == code


def test_every_item_failing_exits_5(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _noise_image(d / "only.png", 1)
    info = run_invert(d, tmp_path / "out", explode="only.png")
    assert info.counts.failed == 1 and exit_code_for(info) == EXIT_RUNTIME
