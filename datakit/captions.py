"""Danbooru caption parsing and formatting: commas, `_` vs space, escaped brackets, kaomoji.

This module holds the shared basics every stage needs; `datakit.tags` builds the rule engine on it.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Tags whose underscores are part of the face, not word separators (WD14's own list plus common ones).
KAOMOJI = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
        "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||", "^_^;", "-_-", "-_-;", ";_;", "t_t", "q_q",
        "0_o", "o_0", "*_*", "._.;", "owo", "uwu", "^_-", "-_^", ">_>", "<_<", "v_v", "x_o", "o_x",
        ":_:", "-_o", "o_-",
    }
)

_ESCAPED_PAREN = re.compile(r"\\([()\[\]])")


def is_kaomoji(tag: str) -> bool:
    """True for emoticon tags whose `_` must never become a space."""
    t = tag.strip()
    if t.lower() in KAOMOJI:
        return True
    # Short tags made of punctuation/eye letters around `_` are faces: `>_<`, `;_;`, and mirrored
    # eyes like `T_T`; a short word pair such as `a_b` is not.
    if len(t) > 7 or "_" not in t or re.search(r"[a-z]{2,}", t.lower()):
        return False
    if re.search(r"[^\w\s]", t):
        return True
    left, _, right = t.partition("_")
    return left.casefold() == right.casefold() and 0 < len(left) <= 2


def split_caption(text: str) -> list[str]:
    """Split caption text at commas (BOM, CRLF, blank chunks and surrounding spaces removed)."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").replace("\n", ",")
    return [chunk.strip() for chunk in text.split(",") if chunk.strip()]


def unescape(tag: str) -> str:
    """`\\(` -> `(` and `\\)` -> `)`."""
    return _ESCAPED_PAREN.sub(r"\1", tag)


def to_spaces(tag: str) -> str:
    """`long_hair` -> `long hair`, sparing kaomoji."""
    return tag if is_kaomoji(tag) else tag.replace("_", " ")


def to_underscores(tag: str) -> str:
    """`long hair` -> `long_hair`, sparing kaomoji."""
    return tag if is_kaomoji(tag) else tag.replace(" ", "_")


_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=1 << 16)  # a dataset repeats the same few thousand tags; rules compare keys constantly
def canonical(tag: str) -> str:
    """The matching key of a tag: unescaped, spaces for `_`, whitespace collapsed, case folded."""
    t = unescape(tag.strip())
    t = to_spaces(t)
    return _SPACES.sub(" ", t).strip().casefold()


def escape_parens(tag: str) -> str:
    """`name (series)` -> `name \\(series\\)` for A1111 prompts (already-escaped stays as is)."""
    return re.sub(r"(?<!\\)([()])", r"\\\1", tag)


def format_tag(tag: str, *, underscores: bool = False, escape: bool = False) -> str:
    """One tag in the output form: spaces (default) or underscores, parentheses escaped or not."""
    t = unescape(tag.strip())
    t = to_underscores(t) if underscores else to_spaces(t)
    return escape_parens(t) if escape else t


def dedupe(tags: list[str]) -> list[str]:
    """Drop repeated tags (any spelling), keeping the first occurrence."""
    seen: set[str] = set()
    out = []
    for t in tags:
        key = canonical(t)
        if key and key not in seen:
            seen.add(key)
            out.append(t)
    return out


def parse_caption(text: str) -> list[str]:
    """Caption text -> list of tags as written (unescaped), duplicates removed."""
    return dedupe([unescape(t) for t in split_caption(text)])


def format_caption(tags: list[str], *, underscores: bool = False, escape: bool = False, separator: str = ", ") -> str:
    """List of tags -> caption text in the chosen form, duplicates removed."""
    return separator.join(format_tag(t, underscores=underscores, escape=escape) for t in dedupe(tags))


def check_trigger(value: str, *, source: str | None = None) -> str:
    """A trigger word checked as one tag (no comma, newline, NUL or other control character), stripped."""
    import unicodedata

    from datakit.errors import UsageError

    where = f" (from {source})" if source else ""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise UsageError(f"trigger word {value!r}{where} is empty")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise UsageError(
            f"trigger word {value!r}{where} contains a newline or another control character; "
            "kohya reads only the first line of a caption"
        )
    if "," in text:
        raise UsageError(f"trigger word {value!r}{where} contains a comma, so it would become two tags")
    return text
