"""Red team (issue 16): caption tools are linear in the caption's length. A 5 MB caption of 600k tags
ran `tags stats` and `emit` past 300 s (a list used to de-duplicate tags); bracket-heavy captions
made the parser quadratic. Each test counts operations (key comparisons and hashes, or Python lines
executed) and fails once past a bound proportional to the input: no timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.tags import parse
from datakit.tags.parse import parse_tags, split_chunks
from datakit.tags.stats import collect_stats
from robust_util import CountingKey, counting_line_events

N_TAGS = 600_000  # the red team's 5 MB caption
N_EMIT = 200_000  # emit reads each caption three times (stats, tag table, its own checks): a third of the size


def _huge(folder: Path, n: int) -> Path:
    """Two images, one of them captioned with n distinct tags (11 bytes each)."""
    folder.mkdir(parents=True)
    Image.new("RGB", (96, 96), "white").save(folder / "a.png")
    Image.new("RGB", (96, 96), "grey").save(folder / "b.png")
    (folder / "a.txt").write_text(", ".join(f"tag{i:06d}" for i in range(n)), encoding="utf-8")
    (folder / "b.txt").write_text("tag000001, solo", encoding="utf-8")
    return folder


@pytest.fixture
def counted_keys(monkeypatch):
    """Make every tag's matching key count its comparisons and hashes (CountingKey)."""
    real = parse.canonical
    monkeypatch.setattr(parse, "canonical", lambda text: CountingKey(real(text)))
    CountingKey.counter.update(ops=0, budget=12 * N_TAGS)
    yield CountingKey.counter
    CountingKey.counter.update(ops=0, budget=10**9)


def test_tags_stats_on_a_600k_tag_caption_is_linear(tmp_path, counted_keys):
    result = collect_stats(_huge(tmp_path / "in", N_TAGS), tokenizer="none")
    assert result.summary["distinct_tags"] == N_TAGS + 1
    assert result.summary["tags_per_image"]["max"] == N_TAGS
    assert result.summary["in_every_image"] == ["tag000001"]
    assert counted_keys["ops"] <= 12 * N_TAGS  # a list de-dup needs ~N^2/2 = 1.8e11


def test_emit_on_a_huge_caption_is_linear(counted_keys, tmp_path, monkeypatch):
    from datakit.emit import report
    from datakit.stages.emit import EmitConfig, run_emit

    real = report.canonical  # the report's tag table counts tags too
    monkeypatch.setattr(report, "canonical", lambda text: CountingKey(real(text)))
    counted_keys["budget"] = 25 * N_EMIT
    concept = _huge(tmp_path / "in", N_EMIT)
    info = run_emit(EmitConfig(out_dir=tmp_path / "ds", concepts=[("mychar", concept)], workers=1), Reporter(quiet=True))
    assert info["counts"]["out"] == 2
    (folder,) = info["plan"]["folders"].values()
    assert (tmp_path / "ds" / folder / "a.txt").stat().st_size == (concept / "a.txt").stat().st_size + 1  # + newline
    assert counted_keys["ops"] <= 25 * N_EMIT


# Captions built to make a bracket parser quadratic, at a size where n^2 is far beyond the bound.
D = 3000
ADVERSARIAL = {
    "deep emphasis": "(" * D + "x" + ")" * D,
    "deep weight": "(" * D + "x:1.1" + ")" * D,
    "deep mixed brackets": "([" * D + "x" + "])" * D,
    "openers then wrong closers": "(" * D + "]" * D,
    "nested groups with commas": "(" * D + "a, b" + ")" * D,
    "many groups": ", ".join("(a, b:1.2)" for _ in range(D)),
    "digits before closers": "(" * D + "1" * D + ")" * D,
    "escapes and spaces": "\\(" * D + " " * D + "(a ,b)" + " " * D,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_the_caption_parser_is_linear_on_adversarial_brackets(name):
    text = ADVERSARIAL[name]
    budget = 60 * len(text) + 5_000
    tags, lines = counting_line_events(lambda: parse_tags(text), budget)
    assert lines <= budget
    assert tags  # and it still parses to something


def test_the_linear_parser_keeps_its_meaning():
    """The rewrite must read captions exactly as before (the A1111 rules of tests/test_captions.py too)."""
    assert [(t.text, t.weight) for t in parse_tags("((a)), [b], (c:1.5), (d, e:1.2), name_(series), (o)_(o)")] == [
        ("a", 1.21), ("b", 0.9091), ("c", 1.5), ("d", 1.2), ("e", 1.2), ("name_(series)", None), ("(o)_(o)", None)]
    assert [(t.text, t.weight) for t in parse_tags("(( x :2 ))")] == [("x", 2.2)]
    assert [(t.text, t.weight) for t in parse_tags("(a:b:1.5)")] == [("a:b", 1.5)]
    assert [t.text for t in parse_tags(":(, smile, :)")] == [":(", "smile", ":)"]
    assert split_chunks("\\(a, b\\), (c, d:1.1)") == ["\\(a", "b\\)", "(c, d:1.1)"]
    tags = parse_tags("(" * 50 + "deep" + ")" * 50)
    assert tags[0].text == "deep" and tags[0].weight == pytest.approx(round(1.1**50, 4))


def test_tags_stats_names_a_few_tags_in_every_image_not_all_of_them(tmp_path):
    """One huge caption makes each of its tags "in every image": the printed line shows a few and a count."""
    from robust_util import datakit

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (32, 32), "white").save(folder / "a.png")
    (folder / "a.txt").write_text(", ".join(f"tag{i:03d}" for i in range(500)), encoding="utf-8")
    done = datakit("tags", "stats", folder, "--tokenizer", "none")
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("in every image")]
    assert line.endswith("tag029, ... and 470 more") and "tag499" not in line
    stats = json.loads(datakit("tags", "stats", folder, "--tokenizer", "none", "--json").stdout)
    assert len(stats["in_every_image"]) == 500  # the data keeps them all
