"""Caption augmentation as kohya applies it each time an image is used (train_util.BaseDataset.process_caption).

In kohya's order: prefix and suffix joined with a single space; caption dropout (by rate, and every
n-th epoch); wildcards (`{a|b|c}`, one line of a multi-line caption) or else the first line; then,
when shuffling, token warm-up or tag dropout is on, the caption is split on `caption_separator`
into fixed tokens (the first keep_tokens, or the text before `keep_tokens_separator`, and the
text after a second separator), flexible tokens (shuffled, cut by the warm-up, dropped by rate)
and joined with ", "; last, `secondary_separator` becomes `caption_separator`.

Random draws go through a `random.Random` in the same order as kohya's calls to Python's `random`,
so the same generator state gives kohya's result.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

WILDCARD = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class CaptionSettings:
    """A subset's caption options (kohya's names and defaults)."""

    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_separator: str = ","
    secondary_separator: str = ""
    shuffle_caption: bool = False
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    caption_prefix: str = ""
    caption_suffix: str = ""
    enable_wildcard: bool = False
    token_warmup_min: int = 1
    token_warmup_step: float = 0

    @property
    def is_fixed(self) -> bool:
        """True when the caption never changes between uses (so its encoding can be cached)."""
        return not (self.shuffle_caption or self.caption_dropout_rate or self.caption_dropout_every_n_epochs
                    or self.caption_tag_dropout_rate or self.enable_wildcard or self.token_warmup_step > 0)


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """`{a|b|c}` -> one of a, b, c; `{{` and `}}` are literal braces."""
    open_mark, close_mark = "⦅", "⦆"
    while open_mark in caption or close_mark in caption:
        open_mark += "⦅"
        close_mark += "⦆"
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = WILDCARD.sub(lambda m: rng.choice(m.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")


def warmup_steps(settings: CaptionSettings, max_steps: int) -> int:
    """token_warmup_step below 1 is a fraction of the run (kohya)."""
    step = settings.token_warmup_step
    return math.floor(step * max_steps) if step < 1 else int(step)


def process_caption(caption: str, settings: CaptionSettings, rng: random.Random, *, epoch: int = 1, step: int = 0,
                    max_steps: int = 0) -> str:
    """One use of a caption: kohya's augmentation (epoch counts from 1, step from 0)."""
    s = settings
    if s.caption_prefix:
        caption = s.caption_prefix + " " + caption
    if s.caption_suffix:
        caption = caption + " " + s.caption_suffix
    dropped = s.caption_dropout_rate > 0 and rng.random() < s.caption_dropout_rate
    dropped = dropped or (s.caption_dropout_every_n_epochs > 0 and epoch % s.caption_dropout_every_n_epochs == 0)
    if dropped:
        return ""
    if s.enable_wildcard:
        if "\n" in caption:
            caption = rng.choice(caption.split("\n"))
        caption = expand_wildcards(caption, rng)
    else:
        caption = caption.split("\n")[0]
    if s.shuffle_caption or s.token_warmup_step > 0 or s.caption_tag_dropout_rate > 0:
        caption = _rearrange(caption, s, rng, step, max_steps)
    if s.secondary_separator:
        caption = caption.replace(s.secondary_separator, s.caption_separator)
    return caption


def _rearrange(caption: str, s: CaptionSettings, rng: random.Random, step: int, max_steps: int) -> str:
    sep = s.caption_separator
    fixed, flex, fixed_suffix = [], [], []
    if s.keep_tokens_separator and s.keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(s.keep_tokens_separator, 1)
        if s.keep_tokens_separator in flex_part:
            flex_part, suffix_part = flex_part.split(s.keep_tokens_separator, 1)
            fixed_suffix = [t.strip() for t in suffix_part.split(sep) if t.strip()]
        fixed = [t.strip() for t in fixed_part.split(sep) if t.strip()]
        flex = [t.strip() for t in flex_part.split(sep) if t.strip()]
    else:
        tokens = [t.strip() for t in caption.strip().split(sep)]
        flex = tokens[:]
        if s.keep_tokens > 0:
            fixed, flex = flex[: s.keep_tokens], tokens[s.keep_tokens:]
    warm = warmup_steps(s, max_steps)
    if warm and step < warm:
        flex = flex[: math.floor(step * ((len(flex) - s.token_warmup_min) / warm)) + s.token_warmup_min]
    if s.shuffle_caption:
        rng.shuffle(flex)
    if s.caption_tag_dropout_rate > 0:
        flex = [t for t in flex if rng.random() >= s.caption_tag_dropout_rate]
    return ", ".join(fixed + flex + fixed_suffix)
