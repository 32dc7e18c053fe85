"""The boundary checks for names that become paths (datakit.paths) and trigger words."""

from __future__ import annotations

import os

import pytest

from datakit.captions import check_trigger
from datakit.errors import UsageError
from datakit.paths import check_name, is_inside, resolve_inside, safe_name, truncate_name


@pytest.mark.parametrize(
    "bad",
    ["", " ", "/tmp/x", "../../x", "a/b", "a\\b", ".", "..", "x\x00y", "two\nlines", "tab\there", "-rf",
     "con", "LPT1.safetensors", "a:b", "what?", "trailing.", " lead", "x" * 300],
)
def test_check_name_refuses(bad):
    with pytest.raises(UsageError) as err:
        check_name(bad, "output name")
    assert "output name" in str(err.value)


@pytest.mark.parametrize("good", ["sail_kun", "my char", "ünïcødé", "a.b-c_d", "x" * 200, "キャラ"])
def test_check_name_accepts(good):
    assert check_name(good, "output name") == good


@pytest.mark.parametrize("raw", ["/tmp/x", "../../../x", "a\nb", "x\x00", "..", "", "-", "con", "é" * 400])
def test_safe_name_is_always_checkable(raw):
    name = safe_name(raw)
    assert check_name(name, "name") == name
    assert "/" not in name and ".." != name


def test_safe_name_keeps_safe_names_and_distinguishes_cleaned_ones():
    assert safe_name("sail_kun") == "sail_kun"
    # Two different unsafe names must not collapse onto one file.
    assert safe_name("a/b") != safe_name("a:b")


def test_truncate_name_bounds_bytes_and_keeps_names_apart():
    long_a, long_b = "α" * 200 + "a", "α" * 200 + "b"
    ta, tb = truncate_name(long_a, max_bytes=100), truncate_name(long_b, max_bytes=100)
    assert len(ta.encode()) <= 100 and len(tb.encode()) <= 100
    assert ta != tb
    assert truncate_name("short", max_bytes=100) == "short"


def test_resolve_inside(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"x")
    assert resolve_inside(tmp_path / "in", "a.png", "manifest file") == (tmp_path / "in" / "a.png").resolve()
    for bad in ["/etc/hostname", "../x", "sub/../../x", ""]:
        with pytest.raises(UsageError):
            resolve_inside(tmp_path / "in", bad, "manifest file")


def test_resolve_inside_follows_symlinks(tmp_path):
    (tmp_path / "in").mkdir()
    os.symlink("/etc/hostname", tmp_path / "in" / "link.png")
    with pytest.raises(UsageError):
        resolve_inside(tmp_path / "in", "link.png", "manifest file")
    assert is_inside(tmp_path / "in" / "x", tmp_path)
    assert not is_inside(tmp_path, tmp_path / "in")


@pytest.mark.parametrize("bad", ["", "  ", "a,b", "two\nlines", "nul\x00", "tab\tx"])
def test_check_trigger_refuses(bad):
    with pytest.raises(UsageError):
        check_trigger(bad)


def test_check_trigger_strips():
    assert check_trigger("  sail_kun ") == "sail_kun"
