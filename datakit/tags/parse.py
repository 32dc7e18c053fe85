"""A1111 weights and emphasis in captions: `(tag:1.2)`, `((tag))`, `[tag]`, escaped `\\(` `\\)`.

A caption chunk is emphasis only when one bracket pair encloses the whole chunk; parentheses inside a
tag (`name_(series)`, the kaomoji `(o)_(o)`) are part of its name. Escaped brackets are always literal.
Commas inside a weight group (`(red hair, blue eyes:1.2)`) do not end the group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from datakit.captions import canonical, escape_parens, format_tag, is_kaomoji, unescape

EMPHASIS = 1.1  # A1111: each ( ) multiplies attention by 1.1, each [ ] divides by it
_WEIGHT = re.compile(r"^(?P<body>.*):\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*$", re.S)
_CLOSING = {"(": ")", "[": "]"}


@dataclass(frozen=True)
class Tag:
    """One tag: its literal text (unescaped, spelling as written) and its A1111 weight, if any."""

    text: str
    weight: float | None = None  # None: plain tag (weight 1)
    wrap: tuple[str, str] = ("", "")  # the original emphasis syntax, e.g. ("((", "))") or ("(", ":1.2)")
    verbatim: bool = False  # written exactly as given (the trigger word): no `_`/space conversion
    key: str = field(init=False, compare=False, repr=False)  # the matching key: same for any spelling

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", canonical(self.text))


def _matching(s: str, start: int) -> int:
    """Index of the bracket closing s[start], skipping escaped brackets; -1 when unbalanced."""
    opener = s[start]
    closer = _CLOSING[opener]
    depth = 0
    i = start
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _group_spans(text: str) -> list[tuple[int, int]]:
    """Bracket pairs that group several comma-separated tags, like `(red hair, blue eyes:1.2)`.

    Pairs are matched with a stack (escaped brackets skipped); a pair spanning a comma counts only
    when it starts and ends a chunk, so the stray brackets of `:(` ... `:)` never swallow tags.
    """
    stack: list[int] = []
    spans = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c in _CLOSING:
            stack.append(i)
        elif c in ")]":
            for depth in range(len(stack) - 1, -1, -1):
                if _CLOSING[text[stack[depth]]] == c:
                    start = stack[depth]
                    del stack[depth:]
                    if "," in text[start:i]:
                        before = text[:start].rstrip()
                        after = text[i + 1 :].lstrip()
                        if (not before or before[-1] in ",([") and (not after or after[0] in ",)]"):
                            spans.append((start, i))
                    break
        i += 1
    return spans


def split_chunks(text: str) -> list[str]:
    """Split caption text at commas, except inside weight groups; BOM, CRLF and blank chunks handled."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").replace("\n", ",")
    inside = [False] * len(text)
    for a, b in _group_spans(text):
        for k in range(a, b):
            inside[k] = True
    chunks: list[str] = []
    start = 0
    for i, c in enumerate(text):
        if c == "," and not inside[i]:
            chunks.append(text[start:i])
            start = i + 1
    chunks.append(text[start:])
    return [c.strip() for c in chunks if c.strip()]


def _strip_emphasis(chunk: str) -> tuple[str, float | None, tuple[str, str]]:
    """Peel brackets that enclose the whole chunk; return (inner text, weight, wrap)."""
    weight = 1.0
    pre, post = "", ""
    s = chunk
    explicit = False
    while len(s) >= 2 and s[0] in _CLOSING and _matching(s, 0) == len(s) - 1 and not is_kaomoji(s):
        opener = s[0]
        inner = s[1:-1]
        if opener == "(":
            m = _WEIGHT.match(inner)
            if m and not explicit and m.group("body").strip():
                weight *= float(m.group("num"))
                pre, post = pre + "(", ":" + m.group("num") + ")" + post
                s = m.group("body").strip()
                explicit = True
                continue
            weight *= EMPHASIS
        else:
            weight /= EMPHASIS
        pre, post = pre + opener, _CLOSING[opener] + post
        s = inner.strip()
    if not pre:
        return chunk, None, ("", "")
    return s, round(weight, 4), (pre, post)


def parse_tags(text: str) -> list[Tag]:
    """Caption text -> tags in order, with weights; duplicates kept (callers decide)."""
    tags: list[Tag] = []
    for chunk in split_chunks(text):
        inner, weight, wrap = _strip_emphasis(chunk)
        if weight is not None and "," in inner:
            # A weight group: every member gets the group's weight.
            for member in split_chunks(inner):
                sub, w2, _ = _strip_emphasis(member)
                w = round(weight * (w2 or 1.0), 4)
                tags.append(Tag(unescape(sub).strip(), w, ("(", f":{_fmt_weight(w)})")))
            continue
        literal = unescape(inner).strip()
        if literal:
            tags.append(Tag(literal, weight, wrap))
    return tags


def _fmt_weight(w: float) -> str:
    return f"{round(w, 2):g}"


def _reads_as_emphasis(text: str) -> bool:
    """True when unescaped output would be read back as emphasis (a tag that is itself `(x)`)."""
    return len(text) >= 2 and text[0] in _CLOSING and _matching(text, 0) == len(text) - 1 and not is_kaomoji(text)


def format_one(tag: Tag, *, underscores: bool = False, escape: bool = False, weights: bool = False) -> str:
    """One tag in the output form; `weights=True` keeps its original emphasis syntax."""
    if tag.verbatim:
        text = escape_parens(tag.text) if escape else tag.text
    else:
        text = format_tag(tag.text, underscores=underscores, escape=escape)
    if not escape and _reads_as_emphasis(text):
        text = escape_parens(text)  # keep a literal `(x)` tag literal, so re-reading gives the same tag
    if weights and tag.weight is not None:
        return tag.wrap[0] + text + tag.wrap[1]
    return text
