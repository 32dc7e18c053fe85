"""Acceptance: images that are symlinks (a user linking pictures into a work folder) come out as
real files. `os.link` on Linux links the symlink itself, so a relative link copied into OUT pointed
nowhere: the stage reported success and the next stage could not open the image."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.imageio import link_or_copy, open_image
from datakit.stages.tag import TagConfig, run_tag


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_relative_symlinked_input_becomes_a_real_file(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    Image.new("RGB", (48, 48), (10, 200, 10)).save(pool / "pic.png")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(os.path.join("..", "pool", "pic.png"), work / "pic.png")
    out = tmp_path / "deeper" / "tagged"
    info = run_tag(TagConfig(input_dir=work, out_dir=out, model="none"), Reporter(quiet=True))
    assert info.counts.out == 1
    assert not (out / "pic.png").is_symlink()
    assert open_image(out / "pic.png").image.size == (48, 48)


def test_link_or_copy_links_the_target(tmp_path):
    (tmp_path / "real.png").write_bytes(b"png bytes")
    os.symlink("real.png", tmp_path / "alias.png")
    dest = tmp_path / "out" / "alias.png"
    assert link_or_copy(tmp_path / "alias.png", dest) == "link"
    assert not dest.is_symlink() and dest.read_bytes() == b"png bytes"
    assert os.path.samefile(dest, tmp_path / "real.png")
