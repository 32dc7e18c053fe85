"""Apply Rules to one caption, in a fixed, documented order, counting every rule's hits.

Order (docs/tags.md repeats it): parse -> dedupe -> alias -> replace -> remove -> [[rule]] blocks
(file order) -> add -> drop_implied -> drop_character_traits -> trigger first -> dedupe -> order
-> max_tags. Every step works on canonical keys, so spelling never decides whether a rule fires.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from datakit.captions import canonical
from datakit.tags.parse import Tag, format_one, parse_tags
from datakit.tags.patterns import compile_glob
from datakit.tags.rules import Conditional, OutputForm, Pattern, Rules


@dataclass
class Context:
    """What conditional rules and ordering may look at besides the caption itself."""

    folders: tuple[str, ...] = ()  # the input folder's name and the item's parent folders
    stage: str | None = None  # the upstream stage that wrote the item (e.g. "composite")
    # The stage that made the images when captioning stages come between (composite -> tag -> here).
    image_stage: str | None = None
    concept: str | None = None
    frequency: dict[str, int] = field(default_factory=dict)  # canonical key -> images containing it
    confidence: dict[str, float] = field(default_factory=dict)  # canonical key -> tagger score
    characters: frozenset[str] = frozenset()  # canonical keys the tagger called character tags


@dataclass
class RewriteResult:
    """One caption before and after, and which rules changed it."""

    before: list[Tag]
    after: list[Tag]
    hits: Counter

    @property
    def removed(self) -> list[str]:
        keys = {t.key for t in self.after}
        return [t.text for t in _unique(self.before) if t.key not in keys]

    @property
    def added(self) -> list[str]:
        keys = {t.key for t in self.before}
        return [t.text for t in self.after if t.key not in keys]


def _unique(tags: list[Tag]) -> list[Tag]:
    seen: set[str] = set()
    out = []
    for t in tags:
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
    return out


def rule_labels(rules: Rules) -> list[str]:
    """Every hit-counting label the rules define (a label with no hits is worth a warning)."""
    labels = [f"remove {p.text!r}" for p in rules.remove]
    labels += [f"replace {rules.replace_text[k]!r}" for k in rules.replace]
    labels += [f"alias {k!r} -> {v!r}" for k, v in rules.alias.items()]
    for cond in rules.rules:
        labels.append(f"rule {cond.name!r}")
        labels += [f"rule {cond.name!r}: remove {p.text!r}" for p in cond.remove]
    return labels


def _protected(rules: Rules, key: str) -> bool:
    return any(p.matches(key) for p in rules.keep) or (rules.trigger is not None and key == canonical(rules.trigger))


def _remove(tags: list[Tag], patterns: list[Pattern], rules: Rules, hits: Counter, prefix: str = "") -> list[Tag]:
    out = []
    for t in tags:
        hit = next((p for p in patterns if p.matches(t.key)), None)
        if hit is not None and not _protected(rules, t.key):
            hits[f"{prefix}remove {hit.text!r}"] += 1
        else:
            out.append(t)
    return out


def _add(tags: list[Tag], new: list[str], hits: Counter, label: str) -> list[Tag]:
    keys = {t.key for t in tags}
    for text in new:
        if canonical(text) not in keys:
            tags.append(Tag(text))
            keys.add(canonical(text))
            hits[label] += 1
    return tags


@lru_cache(maxsize=1024)
def _folder_glob(glob: str):
    return compile_glob(glob)  # case-insensitive, RE2: linear in the name's length


def _glob_any(values: list[str], candidates: tuple[str, ...]) -> bool:
    return any(_folder_glob(v).fullmatch(c) is not None for v in values for c in candidates)


def scope_label(cond: Conditional) -> str:
    """Hit label counting captions inside a rule's folder/stage/concept scope."""
    return f"in scope of rule {cond.name!r}"


def in_scope(cond: Conditional, ctx: Context) -> bool:
    """The when_folder / when_stage / when_concept part of a rule (all given must hold)."""
    if cond.when_folder and not _glob_any(cond.when_folder, ctx.folders):
        return False
    if cond.when_stage:
        wanted = {s.casefold() for s in cond.when_stage}
        if not {(ctx.stage or "").casefold(), (ctx.image_stage or "").casefold()} & wanted:
            return False
    return not (cond.when_concept and not _glob_any(cond.when_concept, (ctx.concept or "",)))


def condition_holds(cond: Conditional, tags: list[Tag], ctx: Context) -> bool:
    """All given conditions must hold; several values of one `when_*` are alternatives, `if_tag` needs all."""
    if not in_scope(cond, ctx):
        return False
    keys = [t.key for t in tags]
    if not all(any(p.matches(k) for k in keys) for p in cond.if_tag):
        return False
    return not any(p.matches(k) for p in cond.unless_tag for k in keys)


def _implied_closure(rules: Rules, key: str) -> set[str]:
    """Every general tag `key` implies, following chains (absurdly long -> very long -> long)."""
    out: set[str] = set()
    todo = list(rules.implied.get(key, ()))
    while todo:
        k = todo.pop()
        if k not in out:
            out.add(k)
            todo.extend(rules.implied.get(k, ()))
    return out


def _order(tags: list[Tag], rules: Rules, ctx: Context) -> list[Tag]:
    """Trigger, then (unless `keep`) character tags, count tags, then the rest by the chosen key."""
    trigger = canonical(rules.trigger) if rules.trigger else None
    head = [t for t in tags if t.key == trigger]
    rest = [t for t in tags if t.key != trigger]
    if rules.order == "keep":
        return head + rest
    characters = rules.characters | ctx.characters
    chars = [t for t in rest if t.key in characters]
    count_rank = {k: i for i, k in enumerate(rules.count_tags)}
    counts = sorted((t for t in rest if t.key in count_rank and t.key not in characters), key=lambda t: count_rank[t.key])
    others = [t for t in rest if t.key not in characters and t.key not in count_rank]
    position = {id(t): i for i, t in enumerate(others)}  # stable ties: original position
    if rules.order == "frequency":
        others.sort(key=lambda t: (-ctx.frequency.get(t.key, 0), position[id(t)]))
    elif rules.order == "confidence":
        others.sort(key=lambda t: (-ctx.confidence.get(t.key, -1.0), position[id(t)]))
    elif rules.order == "alphabetical":
        others.sort(key=lambda t: (t.key, position[id(t)]))
    return head + chars + counts + others


def rewrite(text: str, rules: Rules, ctx: Context | None = None) -> RewriteResult:
    """Rewrite one caption's text; returns the tags before and after and the per-rule hits."""
    ctx = ctx or Context()
    hits: Counter = Counter()
    before = parse_tags(text)
    tags = list(before)
    if rules.output.weights == "strip":
        tags = [Tag(t.text) for t in tags]

    def dedupe(tags: list[Tag]) -> list[Tag]:
        if not rules.dedupe:
            return tags
        out = _unique(tags)
        hits["dedupe"] += len(tags) - len(out)
        return out

    tags = dedupe(tags)
    # alias: synonyms become the preferred tag (keeping their weight).
    aliased = []
    for t in tags:
        pref = rules.alias.get(t.key)
        if pref is not None and canonical(pref) != t.key:
            hits[f"alias {t.key!r} -> {pref!r}"] += 1
            aliased.append(Tag(pref, t.weight, t.wrap))
        else:
            aliased.append(t)
    tags = aliased
    # replace: one tag becomes zero, one or several tags.
    replaced = []
    for t in tags:
        targets = rules.replace.get(t.key)
        if targets is None:
            replaced.append(t)
            continue
        hits[f"replace {rules.replace_text[t.key]!r}"] += 1
        replaced += [Tag(n, t.weight, t.wrap) for n in targets]
    tags = replaced
    tags = _remove(tags, rules.remove, rules, hits)
    for cond in rules.rules:
        if in_scope(cond, ctx) and (cond.when_folder or cond.when_stage or cond.when_concept):
            hits[scope_label(cond)] += 1
        if condition_holds(cond, tags, ctx):
            hits[f"rule {cond.name!r}"] += 1
            tags = _remove(tags, cond.remove, rules, hits, prefix=f"rule {cond.name!r}: ")
            tags = _add(tags, cond.add, hits, f"rule {cond.name!r}: add")
    tags = _add(tags, rules.add, hits, "add")
    if rules.drop_implied:
        general = set().union(*(_implied_closure(rules, t.key) for t in tags)) if tags else set()
        kept = [t for t in tags if t.key not in general or _protected(rules, t.key)]
        hits["drop_implied"] += len(tags) - len(kept)
        tags = kept
    if rules.drop_character_traits:
        kept = [t for t in tags if t.key not in rules.traits or _protected(rules, t.key)]
        hits["drop_character_traits"] += len(tags) - len(kept)
        tags = kept
    if rules.trigger:
        key = canonical(rules.trigger)
        if not tags or tags[0].key != key:
            hits["trigger"] += 1
        # Written exactly as given: `sail_kun` is a made-up word, not a Danbooru tag to respell.
        tags = [Tag(rules.trigger, verbatim=True)] + [t for t in tags if t.key != key]
    tags = dedupe(tags)
    tags = _order(tags, rules, ctx)
    if rules.max_tags and len(tags) > rules.max_tags:
        keep_n = rules.max_tags
        out = []
        for t in tags:
            if len(out) < keep_n or _protected(rules, t.key):
                out.append(t)
            else:
                hits["max_tags"] += 1
        tags = out
    return RewriteResult(before=before, after=tags, hits=hits)


def format_tags(tags: list[Tag], form: OutputForm) -> str:
    """Tags -> caption text in the output form."""
    keep_weights = form.weights == "keep"
    return form.separator.join(
        format_one(t, underscores=form.underscores, escape=form.escape, weights=keep_weights) for t in tags
    )
