"""Acceptance: the demo's rules file (`when_stage = "composite"`) still applies to composites that went
through `datakit tag` first (composite -> tag -> tags rewrite), and never to the originals."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from datakit.console import Reporter
from datakit.imageio import save_image_atomic, write_text_atomic
from datakit.manifest import read_stage_info
from datakit.stage import StageRun, Task, TaskResult, run_simple_stage
from datakit.stages.tag import TagConfig, run_tag
from datakit.tags.rewrite import RewriteConfig, run_tags_rewrite
from datakit.tags.rules import load_rules

SAMPLE_RULES = Path(__file__).resolve().parents[1] / "samples" / "rules.toml"
CAPTION = "1boy, solo, white background, simple background, smile"


def _make_item(task: Task, shared: dict) -> TaskResult:
    out = Path(shared["out"])
    save_image_atomic(Image.new("RGB", (64, 64), (40, 120, 200)), out / f"{task.key}.png")
    write_text_atomic(out / f"{task.key}.txt", CAPTION)
    return TaskResult(key=task.key, outputs=[f"{task.key}.png", f"{task.key}.txt"])


def _fake_stage(name: str, out: Path) -> Path:
    """A finished stage folder named `name` (its datakit.json says which stage wrote it)."""
    run = StageRun(name, out, {})
    run_simple_stage(run, [Task(key="pose1__bg000"), Task(key="pose1__bg001")], _make_item, workers=1, shared={"out": str(out)})
    return out


def _tag_then_rewrite(src: Path, tmp_path: Path) -> list[str]:
    quiet = Reporter(quiet=True)
    run_tag(TagConfig(input_dir=src, out_dir=tmp_path / "tagged", model="none"), quiet)
    assert read_stage_info(tmp_path / "tagged")["stages"][-2:] == [read_stage_info(src)["stage"], "tag"]
    rules = load_rules(SAMPLE_RULES)
    run_tags_rewrite(RewriteConfig(input_dir=tmp_path / "tagged", out_dir=tmp_path / "rw", rules=rules), quiet)
    return sorted((tmp_path / "rw" / "pose1__bg000.txt").read_text().split(", "))


def test_composite_rule_applies_through_the_tag_stage(tmp_path):
    tags = _tag_then_rewrite(_fake_stage("composite", tmp_path / "comp"), tmp_path)
    assert "white background" not in tags and "simple background" not in tags
    assert tags[0] == "1boy" and "sail_kun" in tags


def test_originals_keep_their_true_white_background(tmp_path):
    tags = _tag_then_rewrite(_fake_stage("cutout", tmp_path / "cut"), tmp_path)
    assert "white background" in tags and "simple background" in tags
