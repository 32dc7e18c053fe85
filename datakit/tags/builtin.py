"""Small curated tag lists: count tags, intrinsic character traits, Danbooru implications.

Kept short on purpose: every entry is a tag a WD14 tagger really emits, and RULES.toml extends
each list (`extra_traits`, `[implied]`, `count_tags`) rather than datakit guessing more.
Spellings use spaces; matching is on canonical keys, so `long_hair` matches too.
"""

from __future__ import annotations

# Who / how many: these lead the caption right after the trigger and character tags.
COUNT_TAGS = (
    "1girl", "2girls", "3girls", "4girls", "5girls", "6+girls", "multiple girls",
    "1boy", "2boys", "3boys", "4boys", "5boys", "6+boys", "multiple boys",
    "1other", "2others", "3others", "multiple others",
    "solo", "solo focus", "no humans", "male focus", "female focus",
)

_COLOURS = (
    "black", "white", "grey", "silver", "blonde", "brown", "light brown", "red", "orange", "yellow",
    "green", "aqua", "blue", "light blue", "dark blue", "purple", "light purple", "pink", "multicolored",
)

# Traits a character always has: a trigger word trained on the character absorbs them, so leaving
# them in every caption makes the trigger weaker (an option, `drop_character_traits`, with a whitelist).
CHARACTER_TRAITS = tuple(
    [f"{c} hair" for c in _COLOURS]
    + [f"{c} eyes" for c in _COLOURS if c not in ("blonde", "silver", "light brown")]
    + [
        "two-tone hair", "gradient hair", "streaked hair", "colored inner hair", "heterochromia",
        "short hair", "medium hair", "long hair", "very long hair", "absurdly long hair",
        "ponytail", "high ponytail", "side ponytail", "twintails", "low twintails", "braid", "twin braids",
        "single braid", "hair bun", "double bun", "ahoge", "bangs", "blunt bangs", "swept bangs",
        "hair between eyes", "sidelocks", "hair intakes", "drill hair",
        "animal ears", "cat ears", "dog ears", "fox ears", "rabbit ears", "wolf ears", "horns", "tail",
        "cat tail", "fox tail", "wings", "pointy ears", "fang", "fangs", "freckles", "mole under eye",
        "slit pupils", "dark skin", "dark-skinned female", "dark-skinned male",
        "flat chest", "small breasts", "medium breasts", "large breasts", "huge breasts",
    ]
)

# specific -> the general tags it implies (Danbooru implications). `drop_implied` removes the general
# tag when the specific one is present: `long hair` adds nothing beside `very long hair`.
IMPLIED: dict[str, tuple[str, ...]] = {
    "very long hair": ("long hair",),
    "absurdly long hair": ("very long hair", "long hair"),
    "two-tone hair": ("multicolored hair",),
    "gradient hair": ("multicolored hair",),
    "streaked hair": ("multicolored hair",),
    "colored inner hair": ("multicolored hair",),
    "twin braids": ("braid",),
    "single braid": ("braid",),
    "french braid": ("braid",),
    "high ponytail": ("ponytail",),
    "low twintails": ("twintails",),
    "double bun": ("hair bun",),
    "cat ears": ("animal ears",),
    "dog ears": ("animal ears",),
    "fox ears": ("animal ears",),
    "rabbit ears": ("animal ears",),
    "wolf ears": ("animal ears",),
    "cat tail": ("tail",),
    "fox tail": ("tail",),
    "dog tail": ("tail",),
    "fangs": ("fang",),
    "small breasts": ("breasts",),
    "medium breasts": ("breasts",),
    "large breasts": ("breasts",),
    "huge breasts": ("breasts",),
    "2girls": ("multiple girls",),
    "3girls": ("multiple girls",),
    "4girls": ("multiple girls",),
    "5girls": ("multiple girls",),
    "6+girls": ("multiple girls",),
    "2boys": ("multiple boys",),
    "3boys": ("multiple boys",),
    "4boys": ("multiple boys",),
    "5boys": ("multiple boys",),
    "6+boys": ("multiple boys",),
    "grin": ("smile",),
    "evil smile": ("smile",),
    "pleated skirt": ("skirt",),
    "miniskirt": ("skirt",),
    "black skirt": ("skirt",),
    "white thighhighs": ("thighhighs",),
    "black thighhighs": ("thighhighs",),
    "white shirt": ("shirt",),
    "collared shirt": ("shirt",),
    "hairclip": ("hair ornament",),
    "hair flower": ("hair ornament",),
    # Not `white background` -> `simple background`: the originals keep both on purpose (the pair
    # tells the model that the plain backdrop is a property of these images, not of the subject).
}
