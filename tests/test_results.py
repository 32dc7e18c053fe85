"""Typed stage results (datakit/results.py): every stage's real datakit.json reads back into its result
type and writes out again unchanged — the same keys, values and order — and the CLI prints the same."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datakit.backgrounds.config import BackgroundsResult
from datakit.console import Reporter
from datakit.manifest import read_stage_info
from datakit.results import Carry, Counts, ItemProblem, StageResult, Timings
from datakit.stage import exit_code_for
from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds
from datakit.stages.composite import CompositeConfig, CompositeResult, run_composite
from datakit.stages.cutout import CutoutConfig, CutoutResult, Segmenter, run_cutout
from datakit.stages.emit import EmitConfig, EmitResult, run_emit
from datakit.stages.review import ReviewConfig, ReviewCounts, ReviewResult, run_review
from datakit.stages.tag import TagConfig, TagResult, run_tag
from datakit.tags.rewrite import RewriteConfig, RewriteResult, run_tags_rewrite
from datakit.tags.rules import Rules


def _round_trips(out: Path, result_type: type[StageResult], returned=None) -> StageResult:
    """datakit.json -> result_type -> JSON is the identity (order included); the stage returned the same."""
    written = read_stage_info(out)
    typed = result_type.from_json(written)
    assert typed.to_json() == written and list(typed.to_json()) == list(written)
    assert json.dumps(typed.to_json()) == json.dumps(written)
    if returned is not None:
        assert isinstance(returned, result_type) and returned.to_json() == written
    assert typed.extra == {}, f"keys {result_type.__name__} does not know: {sorted(typed.extra)}"
    return typed


def _subjects(folder: Path) -> Path:
    """Two drawn figures on white, with captions: what a user feeds the cutout stage."""
    folder.mkdir(parents=True)
    for i, colour in enumerate([(200, 40, 40), (40, 60, 190)]):
        img = np.full((180, 140, 3), 255, np.uint8)
        cv2.ellipse(img, (70, 100), (35 + 5 * i, 60), 0, 0, 360, colour, -1)
        cv2.circle(img, (70, 35), 22, colour, -1)
        Image.fromarray(img).save(folder / f"pose{i}.png")
        (folder / f"pose{i}.txt").write_text("1girl, solo, white background, simple background\n")
    return folder


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The CPU stages chained on tiny inputs: cutout -> composite (backgrounds made inside) -> tag -> tags rewrite -> emit."""
    root = tmp_path_factory.mktemp("chain")
    quiet = Reporter(quiet=True)
    subjects = _subjects(root / "subjects")
    results = {"cutout": run_cutout(CutoutConfig(input_dir=subjects, out_dir=root / "cutout", workers=1), quiet)}
    results["composite"] = run_composite(CompositeConfig(input_dir=root / "cutout", out_dir=root / "composite", bg_count=3,
                                                         width=96, height=96, workers=1), quiet)
    results["tag"] = run_tag(TagConfig(input_dir=root / "composite", out_dir=root / "tagged", model="none", workers=1), quiet)
    rules = Rules()
    rules.trigger = "sail_kun"
    results["tags"] = run_tags_rewrite(RewriteConfig(input_dir=root / "tagged", out_dir=root / "rewritten", rules=rules,
                                                     workers=1), quiet)
    results["emit"] = run_emit(EmitConfig(out_dir=root / "dataset", concepts=[("sail_kun", root / "rewritten")],
                                          min_size=32, workers=1), quiet)
    return root, results


def test_every_cpu_stage_round_trips(pipeline):
    root, results = pipeline
    _round_trips(root / "composite/backgrounds", BackgroundsResult)
    composite = _round_trips(root / "composite", CompositeResult, results["composite"])
    assert composite.backgrounds.generated and composite.backgrounds.used == 3 and composite.subjects == 2
    tag = _round_trips(root / "tagged", TagResult, results["tag"])
    assert tag.tagger is None and "provider" not in tag.to_json()  # no model ran: no provider key
    rewrite = _round_trips(root / "rewritten", RewriteResult, results["tags"])
    assert rewrite.carry == Carry(trigger="sail_kun", keep_tokens=1)
    assert rewrite.stages == ["cutout", "composite", "tag", "tags"]
    emit = _round_trips(root / "dataset", EmitResult, results["emit"])
    assert emit.findings.no_caption == [] and emit.carry.trigger == "sail_kun"
    assert emit.plan["folders"] == {"sail_kun": f"img/{emit.plan['concepts'][0]['repeats']}_sail_kun"}
    cutout = _round_trips(root / "cutout", CutoutResult, results["cutout"])
    assert cutout.method == "flat" and cutout.counts.out == 2
    assert cutout.segmenter is None and "segmenter" not in cutout.to_json()  # no model ran: no segmenter key
    # A stage's own record field (a model's segmenter) reads back typed.
    with_model = CutoutResult.from_json({**cutout.to_json(), "segmenter": {"model": "u2net", "providers": ["CPUExecutionProvider"]}})
    assert with_model.segmenter == Segmenter(model="u2net", providers=["CPUExecutionProvider"])
    assert list(with_model.to_json())[-4:] == ["method", "holes_file", "review", "segmenter"]


def test_review_round_trips(pipeline, tmp_path):
    root, _ = pipeline
    returned = run_review(ReviewConfig(input_dir=root / "tagged", out_dir=tmp_path / "reviewed", accept_all=True),
                          Reporter(quiet=True))
    typed = _round_trips(tmp_path / "reviewed", ReviewResult, returned)
    assert typed.review == ReviewCounts(kept=3, mode="accept-all", decided_by="accept-all", holes_file=None)
    assert typed.stages == ["cutout", "composite", "tag", "review"]


def test_nothing_to_do_reads_the_previous_result_back(pipeline):
    root, results = pipeline
    again = run_emit(EmitConfig(out_dir=root / "dataset", concepts=[("sail_kun", root / "rewritten")], min_size=32,
                                workers=1), Reporter(quiet=True))
    assert isinstance(again, EmitResult) and again.nothing_to_do
    assert again.counts.processed == 0 and again.counts.reused == results["emit"].counts.out
    assert again.findings == results["emit"].findings and again.plan == results["emit"].plan
    shown = again.to_json()
    assert shown.pop("nothing_to_do") is True
    written = read_stage_info(root / "dataset")
    for key in ("counts", "timings"):  # this run's reuse count and time; everything else as written
        shown.pop(key), written.pop(key)
    assert shown == written


def test_folder_backgrounds_round_trip(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(photos / f"p{i}.jpg")
    (photos / "broken.png").write_bytes(b"not a png")
    returned = run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "bg", count=2, engine="folder", from_dir=photos,
                                                 width=64, height=64, workers=1))
    typed = _round_trips(tmp_path / "bg", BackgroundsResult, returned)
    assert typed.engine == "folder" and typed.scenes is None and "scenes" not in typed.to_json()
    assert typed.skipped == [ItemProblem("broken.png", typed.skipped[0].reason)] and exit_code_for(typed) == 3


def test_a_training_run_without_a_result_type_prints_unchanged(tmp_path):
    """train returns its own dict (it has no result type of its own yet): read back key for key."""
    from datakit.testing import save_tiny_model, write_tiny_dataset
    from datakit.train.config import build_config
    from datakit.train.loop import run_train

    model = save_tiny_model(tmp_path / "model", "sd1")
    dataset = write_tiny_dataset(tmp_path / "ds", images=2)
    values = {"dataset": dataset, "base_model": str(model), "output": tmp_path / "out", "device": "cpu", "max_steps": 1,
              "save_precision": "fp32"}
    info = run_train(build_config(values), Reporter(quiet=True))
    assert StageResult.from_json(info).to_json() == info  # what --json prints
    written = read_stage_info(tmp_path / "out")
    assert StageResult.from_json(written).to_json() == written and list(StageResult.from_json(written).to_json()) == list(written)
    assert StageResult.from_json(info).timings.other == {"train_s": info["timings"]["train_s"]}
    dry = run_train(build_config(dict(values, dry_run=True)), Reporter(quiet=True))
    typed = StageResult.from_json(dry)
    assert typed.to_json() == dry and "failed" not in typed.counts.to_json() and "timings" not in typed.to_json()
    assert exit_code_for(typed) == 0


def test_the_result_types_themselves():
    counts = Counts(in_=3, out=0, reused=0, processed=3, skipped=0, failed=3)
    assert counts.to_json() == {"in": 3, "out": 0, "reused": 0, "processed": 3, "skipped": 0, "failed": 3}
    assert exit_code_for(StageResult(counts=counts)) == 5  # every item crashed: the work failed
    assert exit_code_for(StageResult(counts=Counts(in_=3, out=0, skipped=3))) == 3
    assert Timings.from_json({"total_s": 1.5, "train_s": 1.0}).to_json() == {"total_s": 1.5, "train_s": 1.0}
    assert Carry(trigger=None, keep_tokens=0).to_json() == {"keep_tokens": 0}
    # A datakit.json from a newer datakit: unknown keys survive, known ones are typed.
    newer = {"stage": "composite", "counts": {"in": 2, "out": 1, "skipped": 1}, "skipped": [{"source": "a", "reason": "b"}],
             "backgrounds": {"folder": "bg", "generated": True, "used": 1, "available": 2}, "shiny": [1, 2]}
    typed = CompositeResult.from_json(newer)
    assert typed.backgrounds.available == 2 and typed.skipped == [ItemProblem("a", "b")] and typed.extra == {"shiny": [1, 2]}
    assert typed.to_json() == newer


def test_cli_json_prints_the_datakit_json_object(tmp_path, capsys):
    from datakit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "bg"), "--count", "2", "--size", "48", "-j", "1", "--json"])
    assert exc.value.code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == read_stage_info(tmp_path / "bg") and list(printed) == list(read_stage_info(tmp_path / "bg"))
