"""A1111 weights and emphasis in captions: `(tag:1.2)`, `((tag))`, `[tag]`, escaped `\\(` `\\)`.

A caption chunk is emphasis only when one bracket pair encloses the whole chunk; parentheses inside a
tag (`name_(series)`, the kaomoji `(o)_(o)`) are part of its name. Escaped brackets are always literal.
Commas inside a weight group (`(red hair, blue eyes:1.2)`) do not end the group.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from datakit.captions import canonical, escape_parens, format_tag, is_kaomoji, unescape

EMPHASIS = 1.1  # A1111: each ( ) multiplies attention by 1.1, each [ ] divides by it
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
    return _partners(s, start, len(s)).get(start, -1)


# Escapes (a backslash and the character after it), brackets and commas: the only characters the
# parser looks at. Scanning them with one regex keeps every pass linear in the caption's length.
_TOKENS = re.compile(r"\\.|[()\[\],]", re.S)
_BRACKETS = re.compile(r"\\.|[()\[\]]", re.S)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_NUMBER_CHARS = frozenset("0123456789.+-")


def _partners(s: str, lo: int, hi: int) -> dict[int, int]:
    """The closing bracket of every opener in s[lo:hi], each kind matched on its own, escapes skipped."""
    stacks: dict[str, list[int]] = {"(": [], "[": []}
    out: dict[int, int] = {}
    for m in _BRACKETS.finditer(s, lo, hi):
        c = m.group()
        if c in stacks:
            stacks[c].append(m.start())
        elif c in ")]":
            stack = stacks["(" if c == ")" else "["]
            if stack:
                out[stack.pop()] = m.start()
    return out


def _scan(text: str) -> tuple[list[tuple[int, int]], list[int]]:
    """(bracket pairs that group several comma-separated tags, positions of every comma), in one pass.

    Pairs are matched with a stack (escaped brackets skipped; a closer ends the nearest opener of its
    kind and drops the unmatched openers above it); a pair spanning a comma counts only when it
    starts and ends a chunk, so the stray brackets of `:(` ... `:)` never swallow tags.
    """
    stack: list[int] = []  # positions of open brackets
    of_kind: dict[str, list[int]] = {"(": [], "[": []}  # indices into `stack`, per kind
    commas: list[int] = []
    spans: list[tuple[int, int]] = []
    n = len(text)
    for m in _TOKENS.finditer(text):
        i, c = m.start(), m.group()
        if c[0] == "\\":
            if c[1] == ",":
                commas.append(i + 1)  # an escaped comma still separates chunks (kohya splits there too)
            continue
        if c == ",":
            commas.append(i)
        elif c in of_kind:
            of_kind[c].append(len(stack))
            stack.append(i)
        else:
            kind = of_kind["(" if c == ")" else "["]
            if not kind:
                continue
            depth = kind[-1]
            start = stack[depth]
            del stack[depth:]
            for idx in of_kind.values():
                while idx and idx[-1] >= depth:
                    idx.pop()
            k = bisect.bisect_right(commas, start)
            if k < len(commas) and commas[k] < i:
                b = start - 1
                while b >= 0 and text[b].isspace():
                    b -= 1
                a = i + 1
                while a < n and text[a].isspace():
                    a += 1
                if (b < 0 or text[b] in ",([") and (a >= n or text[a] in ",)]"):
                    spans.append((start, i))
    return spans, commas


def split_chunks(text: str) -> list[str]:
    """Split caption text at commas, except inside weight groups; BOM, CRLF and blank chunks handled."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").replace("\n", ",")
    spans, commas = _scan(text)
    # Groups nest or are disjoint: only the outermost ones decide where a comma splits.
    outer: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if not outer or a > outer[-1][1]:
            outer.append((a, b))
    chunks: list[str] = []
    start = 0
    g = 0
    for i in commas:
        while g < len(outer) and outer[g][1] <= i:
            g += 1
        if g < len(outer) and outer[g][0] <= i < outer[g][1]:
            continue
        chunks.append(text[start:i])
        start = i + 1
    chunks.append(text[start:])
    return [c.strip() for c in chunks if c.strip()]


def _trim(s: str, lo: int, hi: int) -> tuple[int, int]:
    """The window s[lo:hi] without surrounding whitespace (indices, no copy)."""
    while lo < hi and s[lo].isspace():
        lo += 1
    while hi > lo and s[hi - 1].isspace():
        hi -= 1
    return lo, hi


def _trailing_weight(s: str, lo: int, hi: int) -> tuple[int, str] | None:
    """For the inside s[lo:hi] of `( )`: (index of the colon, number text) when it ends in `:<number>`."""
    j = hi
    while j > lo and s[j - 1].isspace():
        j -= 1
    k = j
    while k > lo and s[k - 1] in _NUMBER_CHARS:
        k -= 1
    number = s[k:j]
    if not _NUMBER.fullmatch(number):
        return None
    while k > lo and s[k - 1].isspace():
        k -= 1
    if k == lo or s[k - 1] != ":":
        return None
    return k - 1, number


def _strip_emphasis(chunk: str) -> tuple[str, float | None, tuple[str, str]]:
    """Peel brackets that enclose the whole chunk; return (inner text, weight, wrap).

    Works on index windows into `chunk` with its bracket pairs found once, so a chunk nested
    thousands of levels deep costs one pass, not one pass per level.
    """
    partner = _partners(chunk, 0, len(chunk))
    weight = 1.0
    pre: list[str] = []
    post: list[str] = []  # innermost last; reversed when joined
    lo, hi = 0, len(chunk)
    explicit = False
    # A kaomoji is at most 8 characters: longer windows never need the (copying) check.
    while (hi - lo >= 2 and chunk[lo] in _CLOSING and partner.get(lo) == hi - 1
           and not (hi - lo <= 8 and is_kaomoji(chunk[lo:hi]))):
        opener = chunk[lo]
        if opener == "(" and not explicit:
            found = _trailing_weight(chunk, lo + 1, hi - 1)
            if found is not None:
                body = _trim(chunk, lo + 1, found[0])
                if body[1] > body[0]:
                    weight *= float(found[1])
                    pre.append("(")
                    post.append(":" + found[1] + ")")
                    lo, hi = body
                    explicit = True
                    continue
        weight = weight * EMPHASIS if opener == "(" else weight / EMPHASIS
        pre.append(opener)
        post.append(_CLOSING[opener])
        lo, hi = _trim(chunk, lo + 1, hi - 1)
    if not pre:
        return chunk, None, ("", "")
    return chunk[lo:hi], round(weight, 4), ("".join(pre), "".join(reversed(post)))


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
