"""The composite's caption: the subject's own tags minus what stopped being true, plus scene and framing."""

from __future__ import annotations

import re

from datakit.captions import canonical, dedupe

# Framing tags: the composite's framing replaces whatever the original drawing was.
FRAMING_TAGS = {"full body", "upper body", "portrait", "close-up", "cowboy shot", "lower body", "head out of frame", "feet out of frame"}
# Tags about the old backdrop that are not of the form "... background".
OLD_BACKDROP_TAGS = {"no background", "white theme", "blank background", "plain background", "transparent", "border", "white border"}
# Below-the-waist tags hidden by an upper-body or portrait crop (Danbooru names, canonical form).
LOWER_BODY_TAGS = {
    "shoes", "boots", "sneakers", "sandals", "high heels", "loafers", "footwear", "socks", "kneehighs",
    "thighhighs", "pantyhose", "legwear", "barefoot", "feet", "toes", "legs", "standing", "full body",
    "knee boots", "ankle boots", "thigh boots", "white footwear", "black footwear", "brown footwear",
    "red footwear", "white socks", "black socks", "white thighhighs", "black thighhighs", "leg up",
    "crossed legs", "sitting", "kneeling", "squatting", "shadow",
}
PORTRAIT_HIDDEN_TAGS = LOWER_BODY_TAGS | {
    "skirt", "shorts", "pants", "belt", "dress", "pleated skirt", "miniskirt", "thighs", "hands", "holding",
}
# Scene tags that stop being true once the subject stands in the scene.
EMPTY_SCENE_TAGS = {"no humans", "no people", "empty", "nobody"}
_BACKGROUND_TAG = re.compile(r"(^|\s)background$")


def is_old_background_tag(tag: str) -> bool:
    """True for any `... background` tag (white, simple, transparent, gradient, ...) or a plain-backdrop tag."""
    key = canonical(tag)
    return bool(_BACKGROUND_TAG.search(key)) or key in OLD_BACKDROP_TAGS


def composite_tags(
    subject_tags: list[str],
    scene_tags: list[str],
    framing_tag: str,
    framing: str,
    *,
    trigger: str | None = None,
) -> tuple[list[str], list[str]]:
    """(caption tags, tags dropped from the subject's and the scene's tags).

    Order: the subject's tags as written (its trigger and leading tags stay first), the framing tag, then
    the background's scene tags.
    """
    hidden = {"upper": LOWER_BODY_TAGS, "close": PORTRAIT_HIDDEN_TAGS}.get(framing, set())
    scene_keys = {canonical(t) for t in scene_tags}
    kept, dropped = [], []
    for tag in subject_tags:
        key = canonical(tag)
        if is_old_background_tag(tag) or key in FRAMING_TAGS or (key in hidden and key not in scene_keys):
            dropped.append(tag)
        else:
            kept.append(tag)
    scene = []
    for tag in scene_tags:
        (dropped if canonical(tag) in EMPTY_SCENE_TAGS else scene).append(tag)
    tags = kept + [framing_tag] + scene
    if trigger:
        trig = canonical(trigger)
        tags = [trigger] + [t for t in tags if canonical(t) != trig]
    return dedupe(tags), dropped
