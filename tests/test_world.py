"""The cure benchmark's miniature world (benchmarks/world/): determinism, tokenizer, captions, judges, resumable state.

Everything here is built in the test from tiny data; the committed world weights are not used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from world import checkpoint  # noqa: E402
from world.finalize import summarise_log  # noqa: E402
from world.judge import SCENE_PROMPTS, is_white_background  # noqa: E402
from world.mascot import TRIGGER, magenta_share, write_drawings  # noqa: E402
from world.objects import COLOURS, KINDS  # noqa: E402
from world.pictures import NO_HUMANS, Item, draw_background, draw_item, scene_of, training_caption  # noqa: E402
from world.scenes import SCENE_BY_NAME, SCENE_NAMES, SIZE  # noqa: E402
from world.tokenizer import byte_alphabet, learn_merges, write_tokenizer  # noqa: E402


# ---- pictures and captions -------------------------------------------------------------------------

def test_an_item_is_redrawn_byte_for_byte_in_any_order():
    late_first = draw_item(5, 7)
    for i in range(7):
        draw_item(5, i)
    again = draw_item(5, 7)
    assert np.asarray(late_first.image).tobytes() == np.asarray(again.image).tobytes()
    assert (late_first.scene, late_first.objects) == (again.scene, again.objects)
    other_world = draw_item(6, 7)
    assert np.asarray(other_world.image).tobytes() != np.asarray(late_first.image).tobytes()
    assert late_first.image.size == (SIZE, SIZE)


def test_every_block_of_ten_items_holds_each_scene_once():
    for block in range(3):
        scenes = [scene_of(11, block * len(SCENE_NAMES) + k) for k in range(len(SCENE_NAMES))]
        assert sorted(scenes) == sorted(SCENE_NAMES)


@pytest.mark.parametrize("scene", ["white", "beach", "night", "underwater"])
def test_caption_names_objects_then_no_humans_then_the_scene(scene):
    for index in range(4):
        item = draw_item(3, index, scene=scene)
        tags = item.caption.split(", ")
        n = len(item.objects)
        assert 0 <= n <= 2
        for tag in tags[:n]:
            colour, kind = tag.split(" ", 1)
            assert colour in COLOURS and kind in KINDS
        assert tags[n] == NO_HUMANS
        assert tuple(tags[n + 1:]) == SCENE_BY_NAME[scene].tags


def test_training_captions_vary_but_only_with_the_items_own_tags():
    item = Item(None, "forest", ["red ball", "blue cat"])
    rng = np.random.default_rng(0)
    captions = [training_caption(item, rng) for _ in range(400)]
    empty = sum(c == "" for c in captions)
    assert 20 <= empty <= 60  # 10% of 400 is 40; the binomial's 4-sigma band
    scene_tags = set(SCENE_BY_NAME["forest"].tags)
    for c in (c for c in captions if c):
        tags = c.split(", ")
        assert set(tags) <= set(item.tags)
        assert scene_tags & set(tags), c  # a non-empty caption always says where it is
    assert len(set(captions)) > 50  # shuffled and dropped: not one caption repeated


def test_backgrounds_for_the_composites_have_no_objects_and_differ_per_index():
    a, ground = draw_background(4321, 0, "beach")
    b, _ = draw_background(4321, 1, "beach")
    assert a.size == (SIZE, SIZE) and 0 < ground < 1
    assert np.asarray(a).tobytes() != np.asarray(b).tobytes()
    assert np.asarray(draw_background(4321, 0, "beach")[0]).tobytes() == np.asarray(a).tobytes()


def test_scene_prompts_use_the_worlds_own_tags():
    for name, prompt in SCENE_PROMPTS.items():
        assert set(prompt.split(", ")) <= set(SCENE_BY_NAME[name].tags), name


# ---- tokenizer --------------------------------------------------------------------------------------

def test_bpe_merges_follow_the_most_frequent_pair():
    # Derived by hand (Sennrich et al. 2016, Algorithm 1; ties go to the pair that sorts first):
    # beach x3, bear x2, sand x1 -> (b,e)=5 ties (e,a)=5, 'b' < 'e'; then (be,a)=5; (bea,c)=3 ties
    # (c,h</w>)=3, 'bea' < 'c'; (beac,h</w>)=3; (bea,r</w>)=2; then sand's pairs, all 1, in sort order.
    assert learn_merges({"beach": 3, "bear": 2, "sand": 1}) == [
        ("b", "e"), ("be", "a"), ("bea", "c"), ("beac", "h</w>"), ("bea", "r</w>"),
        ("a", "n"), ("an", "d</w>"), ("s", "and</w>"),
    ]
    assert learn_merges({"beach": 3, "bear": 2, "sand": 1}, max_merges=2) == [("b", "e"), ("be", "a")]


def test_tokenizer_round_trip_through_transformers(tmp_path):
    from transformers import CLIPTokenizer

    write_tokenizer(tmp_path, {"beach": 3, "bear": 2, "sand": 1})
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    # The whole byte alphabet, alone and word-final, then 8 merges and the two specials.
    assert len(tok) == len(vocab) == 2 * 256 + 8 + 2
    assert set(byte_alphabet()) <= set(vocab)
    ids = tok("beach, sand").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["<|startoftext|>", "beach</w>", ",</w>", "sand</w>", "<|endoftext|>"]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ,", ",") == "beach, sand"
    # A word the world never saw falls apart into byte pieces, none of them the unknown token.
    unseen = tok("zubi").input_ids[1:-1]
    assert tok.convert_ids_to_tokens(unseen) == ["z", "u", "b", "i</w>"]
    assert tok.unk_token_id not in unseen
    padded = tok("beach", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(padded) == 77


# ---- judges -----------------------------------------------------------------------------------------

def test_white_background_judge_on_known_answers():
    white = np.full((64, 64, 3), 255, np.uint8)
    assert is_white_background(white)
    off = white.copy()
    off[..., 2] = 232  # cream: min 232 >= 225, spread 23 <= 24
    assert is_white_background(off)
    grey = np.full((64, 64, 3), 200, np.uint8)
    assert not is_white_background(grey)
    framed = white.copy()
    framed[:8] = (90, 150, 230)  # a blue band over 8 of 64 rows: 4 ring rows of 4 x 64 ... 32% of the ring
    assert not is_white_background(framed)
    subject = white.copy()
    subject[10:54, 10:54] = (225, 45, 200)  # a subject inside the 4 px ring does not count
    assert is_white_background(subject)
    for i in range(6):
        assert is_white_background(np.asarray(draw_background(1, i, "white")[0]))
        assert not is_white_background(np.asarray(draw_background(1, i, "snow")[0])), f"snow field {i}"


def test_mascot_drawings_and_the_magenta_detector(tmp_path):
    files = write_drawings(tmp_path)
    assert len(files) == 5
    for f in files:
        caption = f.with_suffix(".txt").read_text(encoding="utf-8").strip().split(", ")
        assert caption[0] == TRIGGER and "white background" in caption
        img = np.asarray(Image.open(f).convert("RGB"))
        assert img.shape == (SIZE, SIZE, 3)
        assert is_white_background(img)
        assert magenta_share(img) > 0.05  # the smallest drawing, "sitting", is about 10% zubi
    # No scene of the world shows magenta: the detector's base rate is zero.
    for scene in SCENE_NAMES:
        for i in range(3):
            assert magenta_share(np.asarray(draw_item(9, i, scene=scene).image)) < 0.005, scene


# ---- resumable state --------------------------------------------------------------------------------

def _train(torch, model, opt, ema, steps: range):
    for step in steps:
        gen = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(8, 4, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        h = torch.nn.functional.dropout(model(x), p=0.3)  # draws from the global RNG, which must resume too
        loss = ((h - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for k, p in model.named_parameters():
                ema[k].mul_(0.9).add_(p.detach(), alpha=0.1)


def test_checkpoint_resume_is_bit_identical_to_a_straight_run(tmp_path, one_torch_thread):
    import torch

    def fresh(seed):
        torch.manual_seed(seed)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
        ema = {k: p.detach().clone() for k, p in model.named_parameters()}
        return model, opt, ema

    torch.manual_seed(0)
    straight, opt, ema = fresh(0)
    torch.manual_seed(42)
    _train(torch, straight, opt, ema, range(6))

    first, opt1, ema1 = fresh(0)
    torch.manual_seed(42)
    _train(torch, first, opt1, ema1, range(3))
    checkpoint.save(tmp_path, 3, modules={"m": first}, ema=ema1, optimizer=opt1, extra={"note": "half"})
    torch.manual_seed(999)  # whatever happens between the runs
    resumed, opt2, ema2 = fresh(7)  # other initial weights: all of them must come from the checkpoint
    meta, saved_ema = checkpoint.load(checkpoint.latest(tmp_path), modules={"m": resumed}, optimizer=opt2)
    assert meta["step"] == 3 and meta["note"] == "half"
    ema2.update(saved_ema)
    _train(torch, resumed, opt2, ema2, range(3, 6))

    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    for k in ema:
        assert torch.equal(ema[k], ema2[k]), k
    assert opt.state_dict()["state"][0]["step"] == opt2.state_dict()["state"][0]["step"] == 6


def test_checkpoints_keep_the_newest_and_ignore_an_unfinished_one(tmp_path):
    import torch

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    for step in (200, 400, 600):
        checkpoint.save(tmp_path, step, modules={"m": model}, ema=None, optimizer=opt, extra={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000400", "step-0000600"]
    # A save killed halfway leaves a folder without state.json: the last complete one is used.
    (tmp_path / "step-0000800").mkdir()
    assert checkpoint.latest(tmp_path).name == "step-0000600"
    assert checkpoint.latest(tmp_path / "none") is None


def test_finalize_summary_keeps_the_last_row_of_a_resumed_step(tmp_path):
    rows = [{"step": s, "loss": 1.0} for s in (25, 50, 75, 100)]
    rows += [{"step": 75, "loss": 0.5}, {"step": 100, "loss": 0.25}]  # resumed from step 50: logged again
    rows += [{"step": 100, "exported": "x"}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = summarise_log(tmp_path, every=50)
    assert [r["step"] for r in out] == [50, 100]
    assert out[0]["loss_mean"] == pytest.approx(1.0)  # steps 25, 50
    assert out[1]["loss_mean"] == pytest.approx((0.5 + 0.25) / 2)  # steps 75, 100: the resumed rows


# ---- the cure benchmark's table ---------------------------------------------------------------------

def _eval_dir(tmp_path: Path) -> Path:
    """An eval output as `datakit eval` writes it (eval.json + sample files), with known answers."""
    from world.mascot import drawing

    samples, manifest = [], []

    def add(model, scene, seed, image, white, plain):
        file = f"samples/{model}/{scene}_s{seed}.png"
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / file)
        samples.append({"key": f"{model}/{scene}/s{seed}", "model": model, "scene": scene, "seed": seed,
                        "white": white, "plain": plain, "scene_agrees": not white, "subject_present": None,
                        "colour_present": model != "base", "file": None})
        manifest.append({"key": f"{model}/{scene}/s{seed}", "file": file, "status": "ok"})

    for seed in range(2):
        for scene in ("beach", "night"):
            add("base", scene, seed, draw_background(77, seed, scene)[0], False, False)
            add("A", scene, seed, drawing(seed), True, True)  # leaks: zubi on white whatever the prompt
            bg = draw_background(78, seed, scene)[0]
            add("B", scene, seed, bg if seed == 0 else drawing(2), seed == 1, seed == 1)  # half cured, no zubi at s0
        add("A", "plain", seed, drawing(seed), True, True)
    (tmp_path / "eval.json").write_text(json.dumps({"models": [{"label": m} for m in ("base", "A", "B")],
                                                    "samples": samples}))
    # eval names each sample's file in its manifest (eval.json's `file` is empty today)
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
    return tmp_path


def test_cure_table_on_a_known_eval_output(tmp_path, one_torch_thread):
    import cure

    result = cure.table(_eval_dir(tmp_path))
    a, b, base = result["A"]["covered"], result["B"]["covered"], result["base"]["covered"]
    assert (a["samples"], a["white_rate"], a["plain_rate"], a["scene_agreement"]) == (2, 1.0, 1.0, 0.0)
    assert (b["white_rate"], b["mascot_presence_colour"]) == (0.5, 1.0)
    assert a["magenta_present"] == 1.0 and b["magenta_present"] == 0.5 and base["magenta_present"] == 0.0
    assert a["mascot_presence"] is None  # not measured is not a number
    # The world's scene classifier: empty scenes are their scene, zubi on white is not a beach.
    assert base["world_classifier_agrees"] == 1.0 and a["world_classifier_agrees"] == 0.0
    assert result["A"]["held out"]["samples"] == 2 and result["A"]["plain"]["samples"] == 2
    assert result["A"]["plain"]["world_classifier_agrees"] is None  # the plain prompt names no scene
    assert "plain" not in result["B"]

    rows = cure.readme_rows(result, None, 1234)
    assert len(rows) == 2 and all(r.met is False for r in rows)  # B still leaks on half its samples
    cured = {**result, "B": {g: {**r, "white_rate": 0.0, "magenta_present": 1.0} for g, r in result["B"].items()}}
    assert all(r.met for r in cure.readme_rows(cured, None, 1234))
    gone = {**result, "B": {g: {**r, "white_rate": 0.0, "magenta_present": 0.0} for g, r in result["B"].items()}}
    assert not any(r.met for r in cure.readme_rows(gone, None, 1234))  # no leak because no zubi: not cured
