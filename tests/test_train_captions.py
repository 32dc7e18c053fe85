"""Golden tests for caption augmentation: datakit's result equals kohya's for the same random generator.

The reference is kohya sd-scripts 48d368f, library/train_util.py, BaseDataset.process_caption (and
DreamBoothDataset's read_caption for multi-line files), re-derived below with its calls to Python's
`random` made on a `random.Random` (the same calls in the same order), so for one seed both sides
must give the same caption, character for character.
"""

from __future__ import annotations

import itertools
import math
import random
import re

import pytest

from datakit.train.caption_aug import CaptionSettings, process_caption


def kohya_process_caption(s: CaptionSettings, caption: str, rnd: random.Random, *, current_epoch: int,
                          current_step: int, max_train_steps: int) -> str:
    """train_util.BaseDataset.process_caption, with `random` -> rnd and the subset's fields from s."""
    if s.caption_prefix:
        caption = s.caption_prefix + " " + caption
    if s.caption_suffix:
        caption = caption + " " + s.caption_suffix
    is_drop_out = s.caption_dropout_rate > 0 and rnd.random() < s.caption_dropout_rate
    is_drop_out = is_drop_out or s.caption_dropout_every_n_epochs > 0 and current_epoch % s.caption_dropout_every_n_epochs == 0
    if is_drop_out:
        return ""
    if s.enable_wildcard:
        if "\n" in caption:
            caption = rnd.choice(caption.split("\n"))
        replacer1, replacer2 = "⦅", "⦆"
        while replacer1 in caption or replacer2 in caption:
            replacer1 += "⦅"
            replacer2 += "⦆"
        caption = caption.replace("{{", replacer1).replace("}}", replacer2)
        caption = re.sub(r"\{([^}]+)\}", lambda m: rnd.choice(m.group(1).split("|")), caption)
        caption = caption.replace(replacer1, "{").replace(replacer2, "}")
    else:
        caption = caption.split("\n")[0]
    token_warmup_step = s.token_warmup_step
    if s.shuffle_caption or token_warmup_step > 0 or s.caption_tag_dropout_rate > 0:
        fixed_tokens, flex_tokens, fixed_suffix_tokens = [], [], []
        if s.keep_tokens_separator and s.keep_tokens_separator in caption:
            fixed_part, flex_part = caption.split(s.keep_tokens_separator, 1)
            if s.keep_tokens_separator in flex_part:
                flex_part, fixed_suffix_part = flex_part.split(s.keep_tokens_separator, 1)
                fixed_suffix_tokens = [t.strip() for t in fixed_suffix_part.split(s.caption_separator) if t.strip()]
            fixed_tokens = [t.strip() for t in fixed_part.split(s.caption_separator) if t.strip()]
            flex_tokens = [t.strip() for t in flex_part.split(s.caption_separator) if t.strip()]
        else:
            tokens = [t.strip() for t in caption.strip().split(s.caption_separator)]
            flex_tokens = tokens[:]
            if s.keep_tokens > 0:
                fixed_tokens = flex_tokens[: s.keep_tokens]
                flex_tokens = tokens[s.keep_tokens:]
        if token_warmup_step < 1:  # kohya overwrites the subset's value once: a fraction of the run
            token_warmup_step = math.floor(token_warmup_step * max_train_steps)
        if token_warmup_step and current_step < token_warmup_step:
            tokens_len = math.floor(current_step * ((len(flex_tokens) - s.token_warmup_min) / token_warmup_step)) \
                + s.token_warmup_min
            flex_tokens = flex_tokens[:tokens_len]
        if s.shuffle_caption:
            rnd.shuffle(flex_tokens)
        if s.caption_tag_dropout_rate > 0:
            flex_tokens = [t for t in flex_tokens if rnd.random() >= s.caption_tag_dropout_rate]
        caption = ", ".join(fixed_tokens + flex_tokens + fixed_suffix_tokens)
    if s.secondary_separator:
        caption = caption.replace(s.secondary_separator, s.caption_separator)
    return caption


CAPTIONS = [
    "sks, 1girl, solo, red hair, smile, looking at viewer, outdoors, sky",
    "sks 1girl,solo , , blue_eyes;;hat, white background,",
    "sks, {red|blue|green} dress, {standing|sitting}, {{literal}}, hat",
    "sks ||| 1girl, solo, smile, dress ||| masterpiece, best quality",
    "first line, a, b, c\nsecond line, d, e\n{x|y} third, f",
    "",
]

SETTINGS = [
    CaptionSettings(),
    CaptionSettings(shuffle_caption=True),
    CaptionSettings(shuffle_caption=True, keep_tokens=2),
    CaptionSettings(shuffle_caption=True, keep_tokens=1, caption_prefix="masterpiece, sks", caption_suffix="high res"),
    CaptionSettings(caption_tag_dropout_rate=0.3, keep_tokens=1),
    CaptionSettings(caption_dropout_rate=0.25, shuffle_caption=True),
    CaptionSettings(caption_dropout_every_n_epochs=3),
    CaptionSettings(shuffle_caption=True, keep_tokens_separator="|||", keep_tokens=5),
    CaptionSettings(secondary_separator=";;", shuffle_caption=True, keep_tokens=1),
    CaptionSettings(secondary_separator=";;"),
    CaptionSettings(enable_wildcard=True),
    CaptionSettings(enable_wildcard=True, shuffle_caption=True, keep_tokens=1, caption_tag_dropout_rate=0.2),
    CaptionSettings(token_warmup_step=0.5, token_warmup_min=2, shuffle_caption=True),
    CaptionSettings(token_warmup_step=20, token_warmup_min=1),
    CaptionSettings(caption_separator=" ", shuffle_caption=True, keep_tokens=1),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=range(len(SETTINGS)))
def test_same_as_kohya_for_the_same_generator(settings):
    changed = 0
    for caption, seed, (epoch, step) in itertools.product(CAPTIONS, range(12), [(1, 0), (3, 7), (6, 30)]):
        ours = process_caption(caption, settings, random.Random(seed), epoch=epoch, step=step, max_steps=40)
        ref = kohya_process_caption(settings, caption, random.Random(seed), current_epoch=epoch, current_step=step,
                                    max_train_steps=40)
        assert ours == ref, (caption, seed, epoch, step)
        changed += ours != caption.split("\n")[0]
    assert changed > 0 or settings == CaptionSettings()  # the options did something


def test_prefix_and_suffix_join_with_a_space_so_keep_tokens_counts_kohya_s_chunks():
    s = CaptionSettings(caption_prefix="sks", keep_tokens=1, shuffle_caption=True)
    out = {process_caption("1girl, solo, smile", s, random.Random(i)) for i in range(20)}
    # "sks 1girl" is one chunk (kohya joins with a space), so it stays first; the rest shuffles
    assert all(o.startswith("sks 1girl, ") for o in out) and len(out) == 2


def test_wildcards_pick_every_option():
    s = CaptionSettings(enable_wildcard=True)
    out = {process_caption("{a|b|c} dress, {{x}}", s, random.Random(i)) for i in range(60)}
    assert out == {"a dress, {x}", "b dress, {x}", "c dress, {x}"}


def test_fixed_settings_allow_caching():
    assert CaptionSettings(caption_prefix="x", secondary_separator=";").is_fixed
    for changing in (dict(shuffle_caption=True), dict(caption_dropout_rate=0.1), dict(caption_tag_dropout_rate=0.1),
                     dict(caption_dropout_every_n_epochs=2), dict(enable_wildcard=True), dict(token_warmup_step=10)):
        assert not CaptionSettings(**changing).is_fixed
