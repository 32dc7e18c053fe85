"""Procedural backgrounds render the same pixels for the same seed, release after release.

The expected values were rendered by the code at commit 01838e9 (datakit/backgrounds/procedural.py
as one 761-line file, before it was split into a package), with numpy 2.4.6 and
opencv-python-headless on x86-64 with numpy's AVX2 (X86_V3) code paths. A seed names an image:
users re-run pipelines, and a scene that changes its pixels silently changes every dataset built
from it. To regenerate after a deliberate change, render each case below with
`render(scene_by_name(name), seed, width, height)` and take the sha256 of the uint8 array's bytes.

Where the pixels differ for a reason outside datakit (another CPU's SIMD level rounds differently:
measured on this machine with NPY_DISABLE_CPU_FEATURES="X86_V4 X86_V3", the wooden room differs in
142 of 18432 values), the pixel check is skipped saying so; tags and ground heights, which do not
depend on rounding, are checked everywhere.
"""

from __future__ import annotations

import hashlib
import platform

import numpy as np
import pytest

from datakit.backgrounds.procedural import PROCEDURAL_SCENES, render, scene_by_name

# (scene, seed, width, height, sha256 of the pixels (first 20 hex digits), ground_y, tags the draw added)
GOLDEN = [
    ("grass field", 1000, 96, 64, "708ca824e4218f61c552", 0.825, ("hill",)),
    ("sunset field", 1001, 96, 64, "fcb5a570f7a8575e6271", 0.871, ("hill",)),
    ("beach", 1002, 96, 64, "70b099996ea2140d799e", 0.829, ()),
    ("sunset sea", 1003, 96, 64, "96b7aaf7d5f5509cf660", None, ()),
    ("mountains", 1004, 96, 64, "9c714a3b69bd914dd33d", 0.854, ()),
    ("snowy mountain", 1005, 96, 64, "14bf542a2ef73fb11f56", 0.849, ("snowing",)),
    ("desert", 1006, 96, 64, "d6a713f432eba8d971be", 0.843, ("cloud",)),
    ("forest", 1007, 96, 64, "9a78c613ed97ebe7c9a0", 0.934, ()),
    ("autumn forest", 1008, 96, 64, "56e93bf70aaeb94a0bbb", 0.902, ()),
    ("lake", 1009, 96, 64, "0d70199364e858d13e5f", 0.888, ()),
    ("sky", 1010, 96, 64, "96dd41f4df706cfb4bb7", None, ()),
    ("starry night", 1011, 96, 64, "05913101915e54d6b5bd", 0.894, ("moon",)),
    ("city night", 1012, 96, 64, "8273b66c7d6fdbc5eb62", 0.818, ()),
    ("city street", 1013, 96, 64, "c86dff10c127c7e203de", 0.885, ()),
    ("city sunset", 1014, 96, 64, "b70def4a7c09afe87091", 0.885, ()),
    ("bokeh lights", 1015, 96, 64, "b8f4bec9ac56d5b75762", None, ()),
    ("underwater", 1016, 96, 64, "aa137ca754ba87af1c74", None, ()),
    ("space", 1017, 96, 64, "095578b03837567963f7", None, ()),
    ("wooden room", 1018, 96, 64, "bb4a811b28149c76edd2", 0.867, ("window",)),
    ("tiled room", 1019, 96, 64, "b690c7edfa67a5d9fe0d", 0.775, ()),
    # Odd and larger sizes, and the branches a seed turns on (a planet, no hill, no cloud, no snow).
    ("grass field", 7, 61, 83, "2ae7dbed8aacb37c02d1", 0.891, ("hill",)),
    ("wooden room", 8, 61, 83, "24955f65aea75e919074", 0.811, ("window",)),
    ("city night", 9, 200, 120, "4e4ff19100197e29caa5", 0.865, ()),
    ("forest", 3, 160, 160, "02385d7ed283c2f77e82", 0.893, ("light rays",)),
    ("space", 20, 80, 72, "d7b5fcd808a28220c4b6", None, ("planet",)),
    ("grass field", 30, 80, 72, "a00e15637b915b269996", 0.809, ()),
    ("desert", 42, 80, 72, "dd6ff5696ca17099534d", 0.855, ()),
    ("snowy mountain", 53, 80, 72, "4217ab6c9d40cec72a92", 0.841, ()),
]


def _reference_simd() -> bool:
    """True where numpy runs the AVX2 (X86_V3) code paths the hashes were recorded with."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy moved its private module: assume the common case
        return True
    return bool(__cpu_features__.get("X86_V3", __cpu_features__.get("AVX2")))


def _case_id(case) -> str:
    return f"{case[0]}-{case[1]}-{case[2]}x{case[3]}"


def test_every_scene_has_a_golden_case():
    assert {s.name for s in PROCEDURAL_SCENES} == {c[0] for c in GOLDEN}


@pytest.mark.parametrize("case", GOLDEN, ids=_case_id)
def test_scene_renders_as_it_did(case):
    name, seed, width, height, digest, ground_y, extra = case
    scene = scene_by_name(name)
    img, got_ground, tags = render(scene, seed, width, height)
    assert img.shape == (height, width, 3) and img.dtype == np.uint8
    assert got_ground == ground_y
    assert tags == [*scene.tags, *extra]
    if not _reference_simd():
        pytest.skip("tags and ground checked; pixel hashes were recorded with numpy's x86-64 AVX2 code paths, "
                    "and other SIMD levels round a few pixels differently")
    assert hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()[:20] == digest
