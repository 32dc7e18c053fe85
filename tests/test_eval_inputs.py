"""What eval reads: scene prompt files, trigger words from LoRA metadata, adapter labels."""

from __future__ import annotations

import json

import pytest

from datakit.errors import UsageError
from datakit.evaluate.adapters import common_tag, metadata_trigger
from datakit.evaluate.scenes import BUILTIN_SCENES, PLAIN, EvalScene, read_scenes_file, with_plain
from datakit.stages.eval import adapter_labels


def test_builtin_scenes_cover_the_hard_cases_and_end_with_the_plain_prompt():
    names = [s.name for s in with_plain(BUILTIN_SCENES)]
    for wanted in ("beach", "forest", "city street", "snow field", "night sky", "room", "overcast sky"):
        assert wanted in names
    assert names[-1] == PLAIN and len(set(names)) == len(names)


def test_prompts_put_the_trigger_first_or_where_the_line_says():
    assert EvalScene("beach", "on a beach").prompt("sks") == "sks, on a beach"
    assert EvalScene("snow", "{trigger} standing in the snow").prompt("sail kun") == "sail kun standing in the snow"
    assert EvalScene(PLAIN, "").prompt("sks") == "sks"
    assert EvalScene("snow", "a photo of {trigger}, snow, winter").clip_text() == "a photo of, snow, winter"


def test_scene_file_formats(tmp_path):
    f = tmp_path / "scenes.txt"
    f.write_text(
        "\ufeff# comment\n\n"
        "on a beach, ocean | beach\n"
        "{trigger} in the snow, winter\n"
        # a `datakit backgrounds` scene file line: the second field is tags, not a name
        "a lush green forest, tall trees | outdoors, forest, tree\n"
        "a starry night sky | night, starry sky | ground=none\n",
        encoding="utf-8",
    )
    scenes = read_scenes_file(f)
    assert [(s.name, s.text) for s in scenes] == [
        ("beach", "on a beach, ocean"),
        ("in the snow winter", "{trigger} in the snow, winter"),
        ("a lush green forest", "a lush green forest, tall trees"),
        ("a starry night sky", "a starry night sky"),
    ]


@pytest.mark.parametrize("text, message", [
    ("# only a comment\n", "no scenes"),
    ("| beach\n", "empty"),
    ("{trigger}\n", "words besides"),
    ("on a beach | ../escape\n", "cannot be used as a file name"),
])
def test_bad_scene_files(tmp_path, text, message):
    f = tmp_path / "s.txt"
    f.write_text(text)
    with pytest.raises(UsageError, match=message):
        read_scenes_file(f)
    with pytest.raises(UsageError, match="cannot read"):
        read_scenes_file(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_scenes_file(tmp_path / "latin1.txt")


def test_scene_names_stay_unique_and_never_take_the_plain_name():
    scenes = with_plain([EvalScene("beach", "on a beach"), EvalScene("Beach", "on a beach at noon"), EvalScene("plain", "a plain")])
    assert [s.name for s in scenes] == ["beach", "Beach 2", "plain 2", "plain"]


def test_trigger_from_lora_metadata(tmp_path):
    p = tmp_path / "x.safetensors"
    assert metadata_trigger({"modelspec.trigger_phrase": "sail kun"}, p) == "sail kun"
    assert metadata_trigger({"ss_training_comment": "datakit; trigger: sks"}, p) == "sks"
    assert metadata_trigger({"ss_training_comment": "my notes"}, p) is None
    assert metadata_trigger({}, p) is None
    with pytest.raises(UsageError, match="control character"):
        metadata_trigger({"modelspec.trigger_phrase": "sks\nrm -rf"}, p)


def test_trigger_from_kohya_tag_frequency():
    """kohya's ss_tag_frequency counts captions per folder: the trigger is the one tag in all of them."""
    dirs = {"100_sks": {"n_repeats": 100, "img_count": 3}, "1_sks_bg": {"n_repeats": 1, "img_count": 5}}
    freq = {"100_sks": {"sks": 3, "white background": 3, "smile": 1}, "1_sks_bg": {"sks": 5, "beach": 2}}
    meta = {"ss_tag_frequency": json.dumps(freq), "ss_dataset_dirs": json.dumps(dirs)}
    assert common_tag(meta) == "sks"
    freq["1_sks_bg"]["1girl"] = 5
    freq["100_sks"]["1girl"] = 3
    assert common_tag({**meta, "ss_tag_frequency": json.dumps(freq)}) is None  # two candidates: ambiguous
    assert common_tag({"ss_tag_frequency": "{not json"}) is None
    assert common_tag({"ss_tag_frequency": json.dumps(freq)}) is None  # no image counts: cannot tell


def test_adapter_labels_are_unique_and_safe(tmp_path):
    a = tmp_path / "a" / "mascot.safetensors"
    b = tmp_path / "b" / "mascot.safetensors"
    c = tmp_path / "base.safetensors"
    for p in (a, b, c):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    assert adapter_labels([a, b, c]) == ["mascot", "mascot-2", "base-2"]
