"""datakit.captions and datakit.tags.parse over tricky captions (table-driven)."""

from __future__ import annotations

import pytest

from datakit.captions import (
    canonical,
    dedupe,
    escape_parens,
    format_caption,
    format_tag,
    is_kaomoji,
    parse_caption,
    split_caption,
    unescape,
)
from datakit.tags.parse import Tag, format_one, parse_tags, split_chunks

LONG = ", ".join(f"tag number {i}" for i in range(300))

# caption text -> (tag texts as parsed, weights) ; None weight = plain tag
PARSE_CASES = [
    ("1girl, solo, long_hair", ["1girl", "solo", "long_hair"], [None, None, None]),
    ("", [], []),
    ("   ", [], []),
    (",,, ,", [], []),
    ("a, b,", ["a", "b"], [None, None]),  # trailing comma
    ("a,b\r\nc\r\n", ["a", "b", "c"], [None] * 3),  # CRLF
    ("\ufeffa, b", ["a", "b"], [None, None]),  # UTF-8 BOM
    ("hatsune_miku_(vocaloid), 1girl", ["hatsune_miku_(vocaloid)", "1girl"], [None, None]),
    (r"hatsune miku \(vocaloid\)", ["hatsune miku (vocaloid)"], [None]),  # escaped: literal
    ("(red hair:1.2), blue eyes", ["red hair", "blue eyes"], [1.2, None]),
    ("(red hair: 0.8)", ["red hair"], [0.8]),
    ("((smile))", ["smile"], [1.21]),
    ("(smile)", ["smile"], [1.1]),
    ("[blush]", ["blush"], [0.9091]),
    ("(red hair, blue eyes:1.3), solo", ["red hair", "blue eyes", "solo"], [1.3, 1.3, None]),
    ("(name_(series):1.2)", ["name_(series)"], [1.2]),
    (r"(name \(series\):1.2)", ["name (series)"], [1.2]),
    ("^_^, >_<, o_o, (o)_(o), T_T", ["^_^", ">_<", "o_o", "(o)_(o)", "T_T"], [None] * 5),
    (":(, smile, :)", [":(", "smile", ":)"], [None] * 3),  # stray brackets never group tags
    ("猫耳, 初音ミク", ["猫耳", "初音ミク"], [None, None]),  # Japanese tags
    ("long hair, long_hair, Long Hair", ["long hair", "long_hair", "Long Hair"], [None] * 3),  # parse keeps duplicates
    ("score:9, a:b", ["score:9", "a:b"], [None, None]),  # a colon outside brackets is part of the tag
]


@pytest.mark.parametrize("text,tags,weights", PARSE_CASES)
def test_parse_tags(text, tags, weights):
    parsed = parse_tags(text)
    assert [t.text for t in parsed] == tags
    assert [t.weight for t in parsed] == weights


def test_parse_very_long_caption():
    parsed = parse_tags(LONG)
    assert len(parsed) == 300 and parsed[-1].text == "tag number 299"


# tag spelling -> canonical key
CANONICAL_CASES = [
    ("long_hair", "long hair"),
    ("Long Hair", "long hair"),
    ("  long   hair ", "long hair"),
    ("long__hair", "long hair"),
    (r"name_\(series\)", "name (series)"),
    ("name_(series)", "name (series)"),
    ("^_^", "^_^"),
    ("T_T", "t_t"),
    ("(o)_(o)", "(o)_(o)"),
    (">_<", ">_<"),
    ("6+girls", "6+girls"),
    ("猫耳", "猫耳"),
]


@pytest.mark.parametrize("tag,key", CANONICAL_CASES)
def test_canonical(tag, key):
    assert canonical(tag) == key
    assert Tag(tag).key == key


@pytest.mark.parametrize("tag", ["^_^", ">_<", "o_o", "(o)_(o)", "T_T", "-_-", "x_x", "^_^;", "@_@"])
def test_kaomoji_recognised_and_kept(tag):
    assert is_kaomoji(tag)
    assert format_tag(tag) == tag
    assert format_tag(tag, underscores=True) == tag


@pytest.mark.parametrize("tag", ["long_hair", "1girl", "white background", "name_(series)", "hair_ornament"])
def test_not_kaomoji(tag):
    assert not is_kaomoji(tag)


# (tag, underscores, escape) -> output
FORMAT_CASES = [
    ("long_hair", False, False, "long hair"),
    ("long hair", True, False, "long_hair"),
    ("name_(series)", False, False, "name (series)"),
    ("name_(series)", False, True, r"name \(series\)"),
    (r"name \(series\)", True, True, r"name_\(series\)"),
    ("^_^", False, True, "^_^"),
]


@pytest.mark.parametrize("tag,underscores,escape,expected", FORMAT_CASES)
def test_format_tag(tag, underscores, escape, expected):
    assert format_tag(tag, underscores=underscores, escape=escape) == expected


def test_escape_and_unescape_round_trip():
    assert escape_parens("a (b)") == r"a \(b\)"
    assert escape_parens(r"a \(b\)") == r"a \(b\)"  # already escaped stays
    assert unescape(escape_parens("a (b)")) == "a (b)"


def test_basic_caption_helpers():
    assert split_caption("\ufeffa, b,\r\nc,, ") == ["a", "b", "c"]
    assert parse_caption(r"long_hair, long hair, x \(y\)") == ["long_hair", "x (y)"]
    assert dedupe(["A_b", "a b", "c"]) == ["A_b", "c"]
    assert format_caption(["long_hair", "long hair", "^_^"]) == "long hair, ^_^"


# (tag, weights kept) -> output with escape off
WEIGHT_FORMAT_CASES = [
    ("(red hair:1.2)", True, "(red hair:1.2)"),
    ("(red hair:1.2)", False, "red hair"),
    ("((smile))", True, "((smile))"),
    ("[blush]", True, "[blush]"),
    ("(name_(series):1.2)", True, "(name (series):1.2)"),
    (r"\(tag\)", False, r"\(tag\)"),  # a literal `(tag)` stays literal when written back
]


@pytest.mark.parametrize("text,keep,expected", WEIGHT_FORMAT_CASES)
def test_format_weights(text, keep, expected):
    (tag,) = parse_tags(text)
    out = format_one(tag, weights=keep)
    assert out == expected
    (again,) = parse_tags(out)  # reading the output back gives the same tag
    assert again.key == tag.key
    if keep:
        assert again.weight == tag.weight


def test_split_chunks_keeps_weight_groups():
    assert split_chunks("(a, b:1.2), c") == ["(a, b:1.2)", "c"]
    assert split_chunks("a, (b), c") == ["a", "(b)", "c"]
