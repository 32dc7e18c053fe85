"""RULES.toml loading/validation and the rule engine: each rule alone, combined, conditional, idempotent."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.captions import canonical
from datakit.errors import UsageError
from datakit.tags.engine import Context, format_tags, rewrite
from datakit.tags.rules import load_rules, rules_from_dict

SAMPLE_RULES = Path(__file__).resolve().parent.parent / "samples" / "rules.toml"


def rw(text: str, ctx: Context | None = None, **doc) -> str:
    """Rewrite `text` with rules given as a TOML-like dict; return the caption text."""
    rules = rules_from_dict(doc)
    return format_tags(rewrite(text, rules, ctx).after, rules.output)


# -- each rule alone ------------------------------------------------------------------------------

RULE_CASES = [
    # (caption, rules, expected caption)
    ("1girl, solo", {}, "1girl, solo"),
    ("1girl, long_hair, long hair, Long Hair", {}, "1girl, long hair"),  # dedupe across spellings
    ("1girl, long_hair, long hair", {"dedupe": False}, "1girl, long hair, long hair"),
    ("1girl, solo", {"trigger": "sail_kun"}, "sail_kun, 1girl, solo"),
    ("1girl, sail kun, solo", {"trigger": "sail_kun"}, "sail_kun, 1girl, solo"),  # moved, not doubled
    ("", {"trigger": "sail_kun"}, "sail_kun"),  # empty caption
    ("a, white_background, b", {"remove": ["white background"]}, "a, b"),  # rule spelling differs
    ("a, White Background, b", {"remove": ["white_background"]}, "a, b"),
    ("a, white_background, simple background, b", {"remove": ["*_background"]}, "a, b"),
    ("a, background, b", {"remove": ["*_background"]}, "a, background, b"),  # glob needs the `_`/space
    ("a, red eyes, blue eyes, b", {"remove": ["re:.* eyes"]}, "a, b"),
    ("1boy, b", {"replace": {"1boy": "1girl"}}, "1girl, b"),
    ("a, nekomimi, b", {"replace": {"nekomimi": ["cat ears", "animal ears"]}}, "a, cat ears, animal ears, b"),
    ("a, signature, b", {"replace": {"signature": []}}, "a, b"),
    ("a, aqua eyes, b", {"alias": {"blue eyes": ["aqua eyes", "light blue eyes"]}}, "a, blue eyes, b"),
    ("a, blue eyes, aqua eyes", {"alias": {"blue eyes": ["aqua eyes"]}}, "a, blue eyes"),  # alias then dedupe
    ("a", {"add": ["solo", "a"]}, "a, solo"),
    ("a, white background", {"remove": ["*_background"], "keep": ["white background"]}, "a, white background"),
    ("1girl, brown hair, blue eyes, smile", {"drop_character_traits": True}, "1girl, smile"),
    ("1girl, brown hair, blue eyes", {"drop_character_traits": True, "keep_traits": ["blue eyes"]}, "1girl, blue eyes"),
    ("1girl, glasses", {"drop_character_traits": True, "extra_traits": ["glasses"]}, "1girl"),
    ("long hair, very long hair", {"drop_implied": True}, "very long hair"),
    ("long hair, very long hair, absurdly long hair", {"drop_implied": True}, "absurdly long hair"),
    ("sailor collar, blue sailor collar", {"drop_implied": True, "implied": {"blue sailor collar": "sailor collar"}},
     "blue sailor collar"),
    ("long hair, very long hair", {}, "long hair, very long hair"),  # drop_implied is off by default
    ("smile, 1girl, solo, sail_kun", {"trigger": "sail_kun", "order": "alphabetical"}, "sail_kun, 1girl, solo, smile"),
    ("z, 1girl, a, solo", {"order": "keep"}, "z, 1girl, a, solo"),
    ("a, b, c, d, e", {"max_tags": 3}, "a, b, c"),
    ("a, b, c, d", {"trigger": "t", "max_tags": 2}, "t, a"),
    ("a, b, c, d", {"keep": ["d"], "max_tags": 2}, "a, b, d"),
    ("long hair, name (series)", {"output": {"underscores": True}}, "long_hair, name_(series)"),
    ("name (series), ^_^", {"output": {"escape": True}}, r"name \(series\), ^_^"),
    ("a, b", {"output": {"separator": ","}}, "a,b"),
    ("(red hair:1.2), ((smile))", {}, "red hair, smile"),
    ("(red hair:1.2), ((smile))", {"output": {"weights": "keep"}}, "(red hair:1.2), ((smile))"),
]


@pytest.mark.parametrize("text,doc,expected", RULE_CASES)
def test_each_rule(text, doc, expected):
    assert rw(text, **doc) == expected


def test_order_frequency_and_confidence():
    rules = rules_from_dict({"trigger": "t", "order": "frequency", "characters": ["miku"]})
    ctx = Context(frequency={"rare": 1, "common": 9, "mid": 5})
    out = rewrite("rare, solo, mid, miku, common, 1girl", rules, ctx).after
    # trigger, character tags, count tags (built-in order), then by frequency
    assert [t.text for t in out] == ["t", "miku", "1girl", "solo", "common", "mid", "rare"]
    rules = rules_from_dict({"order": "confidence"})
    ctx = Context(confidence={"a": 0.4, "b": 0.9}, characters=frozenset({"c"}))
    assert [t.text for t in rewrite("a, b, c, unknown", rules, ctx).after] == ["c", "b", "a", "unknown"]


def test_hits_are_counted_per_rule():
    rules = rules_from_dict({"remove": ["*_background", "nothing here"], "replace": {"x": "y"}, "trigger": "t"})
    res = rewrite("x, white background, simple_background, x", rules)
    assert res.hits["remove '*_background'"] == 2
    assert res.hits["replace 'x'"] == 1  # the second `x` was a duplicate, dropped first
    assert res.hits["dedupe"] == 1
    assert res.hits["trigger"] == 1
    assert "remove 'nothing here'" not in res.hits
    assert res.removed == ["x", "white background", "simple_background"]
    assert res.added == ["t", "y"]


# -- conditional rules ----------------------------------------------------------------------------

COND = {"rule": [{"name": "comp", "when_folder": "*composite*", "remove": ["white background"], "add": "scenery"}]}


@pytest.mark.parametrize(
    "ctx,expected",
    [
        (Context(folders=("composites",)), "a, scenery"),
        (Context(folders=("originals",)), "a, white background"),
        (Context(folders=("data", "my_composites")), "a, scenery"),  # a parent folder of the item
    ],
)
def test_when_folder(ctx, expected):
    assert rw("a, white background", ctx, **COND) == expected


def test_when_stage_and_concept_and_tags():
    doc = {"rule": [{"when_stage": "composite", "remove": "white background"}]}
    assert rw("a, white background", Context(stage="composite"), **doc) == "a"
    assert rw("a, white background", Context(stage="tag"), **doc) == "a, white background"
    doc = {"rule": [{"when_concept": ["sail*"], "add": "x"}]}
    assert rw("a", Context(concept="sail_kun"), **doc) == "a, x"
    assert rw("a", Context(concept="other"), **doc) == "a"
    doc = {"rule": [{"if_tag": ["outdoors", "sky"], "add": "scenery"}]}
    assert rw("outdoors, sky", **doc) == "outdoors, sky, scenery"
    assert rw("outdoors", **doc) == "outdoors"  # every if_tag must be present
    doc = {"rule": [{"if_tag": "outdoors", "unless_tag": "*_background", "add": "scenery"}]}
    assert rw("outdoors", **doc) == "outdoors, scenery"
    assert rw("outdoors, white_background", **doc) == "outdoors, white background"
    # several when_* keys must all hold
    doc = {"rule": [{"when_stage": "composite", "when_folder": "comp*", "add": "x"}]}
    assert rw("a", Context(stage="composite", folders=("comp",)), **doc) == "a, x"
    assert rw("a", Context(stage="composite", folders=("other",)), **doc) == "a"


def test_rules_apply_in_documented_order():
    # alias before replace before remove before [[rule]] before add before implied/traits before trigger.
    doc = {
        "trigger": "sail_kun",
        "alias": {"cat ears": ["nekomimi"]},
        "replace": {"cat ears": ["cat ears", "animal ears"]},  # sees the alias's result
        "remove": ["animal ears"],  # sees the replacement's result
        "rule": [{"if_tag": "cat ears", "add": "very long hair"}],
        "add": ["long hair"],
        "drop_implied": True,  # removes the added `long hair` (very long hair is present)
    }
    assert rw("nekomimi, smile", **doc) == "sail_kun, cat ears, smile, very long hair"


def test_sample_rules_on_original_and_composite():
    rules = load_rules(SAMPLE_RULES)
    original = (
        "solo, 1boy, male focus, chibi, brown hair, short hair, ahoge, blue eyes, sailor collar, blue sailor collar, "
        "red neckerchief, white shirt, full body, white background, simple background"
    )
    out = format_tags(rewrite(original, rules, Context(folders=("subjects",))).after, rules.output)
    assert out.startswith("sail_kun, solo, 1boy")
    assert "white background" in out and "simple background" in out  # originals keep them
    tags = out.split(", ")
    assert "brown hair" not in tags and "blue eyes" not in tags  # traits absorbed by the trigger
    assert "sailor collar" not in tags and "blue sailor collar" in tags  # implied tag dropped
    comp = original.replace("white background, simple background", "white background, outdoors")
    out = format_tags(rewrite(comp, rules, Context(stage="composite")).after, rules.output)
    assert "white background" not in out and "outdoors" in out


# -- idempotence and properties -------------------------------------------------------------------

IDEMPOTENCE_TEXTS = [
    "1girl, (red hair:1.2), ((smile)), [blush], name_(series), ^_^, (o)_(o), :(, long_hair, long hair",
    r"hatsune miku \(vocaloid\), \(tag\), 猫耳, a,,b,",
    "\ufeffwhite_background, simple background, outdoors\r\n",
    "",
]
RULE_SETS = [
    {},
    {"trigger": "sail_kun", "drop_implied": True, "drop_character_traits": True, "order": "alphabetical"},
    {"trigger": "t", "output": {"underscores": True, "escape": True}},
    {"output": {"weights": "keep", "escape": True}, "remove": ["*_background"], "add": ["x"]},
    {"output": {"weights": "keep"}, "max_tags": 4, "replace": {"long hair": ["long hair", "hair"]}},
]


@pytest.mark.parametrize("doc", RULE_SETS)
@pytest.mark.parametrize("text", IDEMPOTENCE_TEXTS)
def test_rewriting_twice_changes_nothing(text, doc):
    once = rw(text, **doc)
    assert rw(once, **doc) == once


_PIECES = st.sampled_from(
    ["long_hair", "long hair", "Long Hair", "1girl", "solo", "^_^", ">_<", "(o)_(o)", "name_(series)",
     r"name \(series\)", "(smile:1.2)", "((blush))", "[frown]", "white_background", "猫耳", "very long hair", "a:b"]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_PIECES, max_size=12), st.sampled_from(RULE_SETS), st.sampled_from([", ", ",", " , ", "\r\n"]))
def test_property_idempotent_and_nothing_lost(pieces, doc, joiner):
    text = joiner.join(pieces)
    rules = rules_from_dict(doc)
    res = rewrite(text, rules)
    once = format_tags(res.after, rules.output)
    assert rw(once, **doc) == once
    if not doc:  # no rule removes anything: every tag survives (once), in first-seen order
        before = list(dict.fromkeys(canonical(t.text) for t in res.before))
        assert [t.key for t in res.after] == before


# -- loading and validation -----------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rules.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_sample_rules_load():
    rules = load_rules(SAMPLE_RULES)
    assert rules.trigger == "sail_kun"
    assert rules.drop_character_traits and rules.drop_implied
    assert rules.rules and rules.rules[0].when_stage == ["composite"]
    tomllib.loads(SAMPLE_RULES.read_text())  # plain TOML, nothing datakit-specific in the syntax


BAD_RULES = [
    # (file text, regex the message must match)
    ('trigger = "a"\nremove = ["x" "y"]\n', r"rules\.toml: invalid TOML.*line 2"),
    ('trigger = "a"\nremoev = ["x"]\n', r"line 2, `remoev`: unknown key \(did you mean `remove`\?\)"),
    ('remove = 3\n', r"line 1, `remove`: expected a string or a list of strings"),
    ('trigger = ""\n', r"`trigger`: expected a non-empty string"),
    ('order = "random"\n', r"line 1, `order`: expected one of keep, frequency"),
    ('max_tags = -1\n', r"`max_tags`: expected a whole number"),
    ('remove = ["re:(unclosed"]\n', r"`remove`: bad regular expression"),
    ('drop_implied = "yes"\n', r"`drop_implied`: expected true or false"),
    ('[output]\nweights = "drop"\n', r"`output.weights`: expected one of strip, keep"),
    ('[output]\nseparator = ";"\n', r"`output.separator`: expected a comma"),
    ('[output]\nunderscore = true\n', r"line 2, `output.underscore`: unknown key \(did you mean `underscores`\?\)"),
    ('[replace]\n"*_x" = "y"\n', r"replace takes exact tags"),
    ('[[rule]]\nname = "a"\nadd = "x"\n\n[[rule]]\nname = "b"\nwhen_foldr = "x"\nadd = "y"\n',
     r"line 7, `rule\[2\]\.when_foldr`: unknown key \(did you mean `when_folder`\?\)"),
    ('[[rule]]\nname = "a"\nif_tag = "x"\n', r"`rule\[1\]`: a \[\[rule\]\] needs `remove` or `add`"),
    ('[alias]\n"a" = ["x"]\n"b" = ["x"]\n', r"'x' is already an alias of 'a'"),
]


@pytest.mark.parametrize("text,message", BAD_RULES)
def test_bad_rules_file_names_line_and_key(tmp_path, text, message):
    with pytest.raises(UsageError) as err:
        load_rules(write(tmp_path, text))
    assert re.search(message, str(err.value)), str(err.value)
    assert str(tmp_path / "rules.toml") in str(err.value)


def test_missing_and_binary_rules_file(tmp_path):
    with pytest.raises(UsageError, match="rules file not found"):
        load_rules(tmp_path / "nope.toml")
    p = tmp_path / "rules.toml"
    p.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_rules(p)


def test_rules_file_with_bom_and_crlf(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_bytes('\ufefftrigger = "sail_kun"\r\nremove = ["x"]\r\n'.encode("utf-8"))
    rules = load_rules(p)
    assert rules.trigger == "sail_kun" and rules.remove[0].key == "x"


@settings(max_examples=40, deadline=None)
@given(st.lists(_PIECES, max_size=12))
def test_property_only_ruled_tags_disappear(pieces):
    doc = {"trigger": "t", "remove": ["*_background"], "drop_implied": True, "replace": {"1girl": ["1girl", "solo"]}}
    rules = rules_from_dict(doc)
    res = rewrite(", ".join(pieces), rules)
    after = {t.key for t in res.after}
    for tag in res.before:
        if tag.key not in after:  # gone: a rule must explain it
            assert tag.key.endswith(" background") or (tag.key == "long hair" and "very long hair" in after)
    assert res.after[0].text == "t"
