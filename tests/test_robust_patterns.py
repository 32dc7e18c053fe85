"""Red team (issue 16): user patterns (`re:` rules, `*`/`?` globs, `when_folder`/`when_concept` globs)
run in RE2, a linear-time engine; syntax RE2 lacks is one clear error naming the file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from datakit.errors import UsageError
from datakit.tags.engine import Context, rewrite
from datakit.tags.rules import Pattern, rules_from_dict
from robust_util import datakit


def _engine(compiled) -> str:
    return type(compiled).__module__.split(".")[0]


def test_a_catastrophic_regex_runs_in_re2_on_a_5000_character_tag():
    pattern = Pattern.parse("re:(a+)+$")
    # The engine first: Python's backtracking `re` takes minutes on 40 characters of this pattern.
    assert _engine(pattern.regex) == "re2"
    tag = "a" * 5000 + "b"
    assert pattern.matches(tag) is False
    assert pattern.matches("a" * 5000) is True


def test_globs_and_folder_globs_run_in_re2_and_keep_their_meaning():
    glob = Pattern.parse("*_background")
    assert _engine(glob.regex) == "re2"
    assert glob.matches("white background") and not glob.matches("background")
    assert Pattern.parse("a?c").matches("abc") and not Pattern.parse("a?c").matches("abbc")
    assert Pattern.parse("name_(series)*").matches("name (series) extra")  # brackets are literal
    many_stars = Pattern.parse("*a*a*a*a*a*a*a*a*a*a*b")
    assert _engine(many_stars.regex) == "re2" and not many_stars.matches("a" * 5000)
    rules = rules_from_dict({"rule": [{"when_folder": "*a*a*a*a*a*a*a*a*b", "add": "x"},
                                      {"when_concept": "SAIL*", "add": "y"}]})
    ctx = Context(folders=("a" * 3000,), concept="sail_kun")
    assert [t.text for t in rewrite("1girl", rules, ctx).after] == ["1girl", "y"]


@pytest.mark.parametrize("regex, what", [
    ("re:(?=white).*", "lookahead"), ("re:(?<!no )hair", "lookbehind"), (r"re:(\w+) \1", "backreference"),
    ("re:a++", "possessive"), ("re:(?>ab)", "atomic"),
])
def test_syntax_re2_lacks_is_a_clear_error_naming_file_line_and_key(tmp_path, regex, what):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    (folder / "a.txt").write_text("white background", encoding="utf-8")
    rules = tmp_path / "rules.toml"
    rules.write_text("# rules\n\nremove = [" + json.dumps(regex) + "]\n", encoding="utf-8")
    done = datakit("tags", "rewrite", folder, tmp_path / "out", "--rules", rules)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {rules}: line 3, `remove`")
    assert "RE2" in lines[0] and "docs/tags.md" in lines[0]


def test_a_broken_regex_is_still_called_broken():
    with pytest.raises(UsageError, match="bad regular expression"):
        rules_from_dict({"remove": ["re:(unclosed"]})


def test_compiled_rules_travel_to_pool_workers():
    import pickle

    rules = rules_from_dict({"remove": ["re:.*watermark.*", "*_background", "solo"]})
    again = pickle.loads(pickle.dumps(rules))
    assert [p.text for p in again.remove] == [p.text for p in rules.remove]
    assert again.remove[0].matches("signed watermark") and _engine(again.remove[0].regex) == "re2"


def test_the_docs_name_the_regex_subset():
    text = (Path(__file__).resolve().parents[1] / "docs" / "tags.md").read_text(encoding="utf-8")
    assert "RE2" in text and "lookahead" in text and "backreference" in text
