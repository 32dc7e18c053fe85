"""Acceptance: a stage never writes over files it did not make.

`datakit cutout build/cutout samples/subjects` (IN and OUT swapped) used to overwrite the user's
original drawings with their cut-outs, silently. Now an OUT holding foreign files, or another
stage's results, is one usage error and nothing in it changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from datakit.cli.main import app
from datakit.errors import EXIT_USAGE, UsageError
from datakit.stage import StageRun


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def drawings(tmp_path) -> Path:
    src = tmp_path / "subjects"
    src.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        img = Image.new("RGB", (96, 128), (255, 255, 255))
        img.paste(Image.new("RGB", (40, 80), colour), (28, 24))
        img.save(src / f"pose{i}.png")
        (src / f"pose{i}.txt").write_text("1girl, solo, white background")
    return src


def _cli(*args):
    return CliRunner().invoke(app, [*map(str, args), "--quiet"])


def test_swapped_in_and_out_leave_the_originals_untouched(drawings, tmp_path):
    cut = tmp_path / "cut"
    assert _cli("cutout", drawings, cut).exit_code == 0
    before = _digest(drawings)
    result = _cli("cutout", cut, drawings)  # swapped
    assert result.exit_code == EXIT_USAGE and "are IN and OUT swapped?" in result.output
    assert _digest(drawings) == before


def test_another_stages_output_is_not_overwritten(drawings, tmp_path):
    cut = tmp_path / "cut"
    assert _cli("cutout", drawings, cut).exit_code == 0
    before = _digest(cut)
    result = _cli("tag", drawings, cut, "--model", "none")
    assert result.exit_code == EXIT_USAGE and "holds the output of the cutout stage" in result.output
    assert _digest(cut) == before
    assert _cli("cutout", drawings, cut, "--force").exit_code == 0  # its own stage may redo it


def test_empty_hidden_only_and_interrupted_folders_are_fine(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    StageRun("demo", empty, {})
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".DS_Store").write_bytes(b"x")
    StageRun("demo", hidden, {})
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "manifest.jsonl").write_text("")
    (interrupted / "a.png").write_bytes(b"x")
    StageRun("demo", interrupted, {})
    with pytest.raises(UsageError, match="did not write"):
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.md").write_text("my notes")
        StageRun("demo", tmp_path / "mine", {})


def test_first_run_killed_outright_can_be_rerun(tmp_path):
    """SIGKILL leaves outputs and no rows: the work-in-progress marker keeps the re-run possible."""
    from datakit.stage import Task

    out = tmp_path / "out"
    run = StageRun("demo", out, {})
    run.plan([Task(key="a")])
    run.invalidate()  # what every stage does before its first output
    (out / "a.png").write_bytes(b"half of a run that was killed")
    StageRun("demo", out, {})  # the re-run is allowed


def test_out_inside_in_is_refused_and_in_is_left_alone(drawings):
    before = sorted(p.name for p in drawings.iterdir())
    result = _cli("cutout", drawings, drawings / "cut")
    assert result.exit_code == EXIT_USAGE and "is inside IN" in result.output
    assert sorted(p.name for p in drawings.iterdir()) == before  # not even an empty subfolder


def test_emit_out_inside_a_concept_folder_is_refused(drawings):
    result = _cli("emit", drawings / "dataset", "--concept", f"a={drawings}")
    assert result.exit_code == EXIT_USAGE and "inside the input folder of concept 'a'" in result.output
    assert not (drawings / "dataset").exists()
