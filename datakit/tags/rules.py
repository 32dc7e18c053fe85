"""RULES.toml: loading, validation (errors name the line and key) and tag patterns.

Every tag a rule names is matched on its canonical key, so `white_background`, `White Background`
and `white background` in a rule or a caption are the same tag. Patterns: `*` and `?` globs
(`*_background`), or a regular expression after `re:` (matched against the whole key), both run by
RE2 in linear time (datakit.tags.patterns).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from datakit.captions import canonical, check_trigger
from datakit.errors import UsageError
from datakit.tags import builtin
from datakit.tags.patterns import PatternError, compile_glob, compile_regex

ORDERS = ("keep", "frequency", "confidence", "alphabetical")
WEIGHT_MODES = ("strip", "keep")


@dataclass(frozen=True)
class Pattern:
    """A tag name or pattern from a rule, matched against canonical keys."""

    text: str  # as written in the rules file (used in messages and hit counts)
    regex: object | None = None  # a compiled RE2 pattern; None: an exact tag
    key: str = ""  # canonical key of an exact tag

    @classmethod
    def parse(cls, text: str) -> "Pattern":
        """`re:...` regex, a glob with `*`/`?`, or an exact tag (PatternError for a regex RE2 refuses)."""
        if text.startswith("re:"):
            return cls(text, compile_regex(text[3:]))
        if "*" in text or "?" in text:
            # `_` and spaces are the same in tags; glob only knows `*` and `?` (brackets are literal).
            body = re.sub(r"\s+", " ", text.strip().replace("_", " ")).casefold()
            return cls(text, compile_glob(body))
        return cls(text, None, canonical(text))

    def __reduce__(self):
        # Compiled RE2 objects do not pickle; pool workers recompile from the text.
        return (Pattern.parse, (self.text,))

    def matches(self, key: str) -> bool:
        """True when the canonical key is this tag or fits this pattern."""
        if self.regex is None:
            return key == self.key
        return self.regex.fullmatch(key) is not None


@dataclass
class OutputForm:
    """How tags are written back: separator, spaces or underscores, escaping, weights."""

    separator: str = ", "
    underscores: bool = False
    escape: bool = False  # `\\(` `\\)` for A1111 prompts; kohya does not need it
    weights: str = "strip"  # strip: `(tag:1.2)` -> `tag`; keep: write the emphasis back


@dataclass
class Conditional:
    """A [[rule]] block: remove/add limited to a folder, stage, concept or captions with a tag."""

    name: str
    when_folder: list[str] = field(default_factory=list)
    when_stage: list[str] = field(default_factory=list)
    when_concept: list[str] = field(default_factory=list)
    if_tag: list[Pattern] = field(default_factory=list)  # every one must be present
    unless_tag: list[Pattern] = field(default_factory=list)  # none may be present
    remove: list[Pattern] = field(default_factory=list)
    add: list[str] = field(default_factory=list)


@dataclass
class Rules:
    """Everything RULES.toml can say; the defaults only normalise and dedupe."""

    trigger: str | None = None
    remove: list[Pattern] = field(default_factory=list)
    add: list[str] = field(default_factory=list)
    keep: list[Pattern] = field(default_factory=list)  # protected from remove/traits/implied/max_tags
    replace: dict[str, list[str]] = field(default_factory=dict)  # canonical key -> tags it becomes
    replace_text: dict[str, str] = field(default_factory=dict)  # canonical key -> spelling in the file
    alias: dict[str, str] = field(default_factory=dict)  # canonical key of a synonym -> preferred tag
    rules: list[Conditional] = field(default_factory=list)
    drop_character_traits: bool = False
    traits: set[str] = field(default_factory=lambda: {canonical(t) for t in builtin.CHARACTER_TRAITS})
    drop_implied: bool = False
    implied: dict[str, set[str]] = field(
        default_factory=lambda: {canonical(k): {canonical(v) for v in vs} for k, vs in builtin.IMPLIED.items()}
    )
    characters: set[str] = field(default_factory=set)
    count_tags: list[str] = field(default_factory=lambda: [canonical(t) for t in builtin.COUNT_TAGS])
    dedupe: bool = True
    order: str = "keep"
    max_tags: int = 0  # 0: no limit
    output: OutputForm = field(default_factory=OutputForm)
    source: str = "(built-in defaults)"

    def to_config(self) -> dict:
        """A JSON-able description (datakit.json config; changes invalidate earlier outputs)."""

        def pats(ps):
            return [p.text for p in ps]

        return {
            "trigger": self.trigger,
            "remove": pats(self.remove),
            "add": self.add,
            "keep": pats(self.keep),
            "replace": {self.replace_text.get(k, k): v for k, v in self.replace.items()},
            "alias": self.alias,
            "rules": [
                {
                    "name": r.name, "when_folder": r.when_folder, "when_stage": r.when_stage,
                    "when_concept": r.when_concept, "if_tag": pats(r.if_tag), "unless_tag": pats(r.unless_tag),
                    "remove": pats(r.remove), "add": r.add,
                }
                for r in self.rules
            ],
            "drop_character_traits": self.drop_character_traits,
            "traits": sorted(self.traits),
            "drop_implied": self.drop_implied,
            "implied": {k: sorted(v) for k, v in sorted(self.implied.items())},
            "characters": sorted(self.characters),
            "count_tags": self.count_tags,
            "dedupe": self.dedupe,
            "order": self.order,
            "max_tags": self.max_tags,
            "output": vars(self.output),
        }


# -- loading --------------------------------------------------------------------------------------

_TOP_KEYS = {
    "trigger", "remove", "add", "keep", "replace", "alias", "rule", "drop_character_traits", "keep_traits",
    "extra_traits", "drop_implied", "implied", "characters", "count_tags", "dedupe", "order", "max_tags", "output",
}
_OUTPUT_KEYS = {"separator", "underscores", "escape", "weights"}
_RULE_KEYS = {"name", "when_folder", "when_stage", "when_concept", "if_tag", "unless_tag", "remove", "add"}


class _Loader:
    """Validates a parsed TOML document, pointing errors at the line where the key is written."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, key: str, after: int = 0) -> int | None:
        """First line (1-based) at or after `after` that writes `key = ...` or opens `[key]`."""
        pat = re.compile(r'^\s*(\[\[?\s*)?("?)' + re.escape(key) + r'\2\s*(=|\]|\.)')
        for i, line in enumerate(self.lines[after:], after + 1):
            if pat.match(line):
                return i
        return None

    def fail(self, where: str, message: str, line_key: str | None = None, after: int = 0) -> None:
        line = self.line_of(line_key or where.split(".")[-1].split("[")[0], after) if (line_key or where) else None
        at = f" line {line}," if line else ""
        raise UsageError(f"{self.path}:{at} `{where}`: {message}")

    def check_keys(self, table: dict, allowed: set[str], where: str, after: int = 0) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else f" (known keys: {', '.join(sorted(allowed))})"
                self.fail(f"{where}{key}", f"unknown key{hint}", key, after)

    def string(self, value, where: str, after: int = 0) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected a non-empty string, got {value!r}", after=after)
        return value.strip()

    def strings(self, value, where: str, after: int = 0) -> list[str]:
        """A string or a list of strings (a single string is a list of one)."""
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(where, f"expected a string or a list of strings, got {type(value).__name__}", after=after)
        return [self.string(v, where, after) for v in value]

    def patterns(self, value, where: str, after: int = 0) -> list[Pattern]:
        out = []
        for text in self.strings(value, where, after):
            try:
                out.append(Pattern.parse(text))
            except PatternError as exc:
                self.fail(where, str(exc), after=after)
        return out

    def trigger(self, value, where: str) -> str:
        """A trigger word: one tag (no comma, newline, NUL), as datakit.captions.check_trigger says."""
        text = self.string(value, where)
        try:
            return check_trigger(text)
        except UsageError as exc:
            self.fail(where, str(exc))
        return text  # pragma: no cover - fail() raises

    def boolean(self, value, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"expected true or false, got {value!r}")
        return value

    def choice(self, value, where: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            self.fail(where, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def load_rules(path: str | Path) -> Rules:
    """Read and validate RULES.toml; any mistake is a UsageError naming the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"rules file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from exc
    return rules_from_dict(doc, _Loader(path, text))


def rules_from_dict(doc: dict, loader: _Loader | None = None) -> Rules:
    """Build Rules from a parsed TOML table (validated like a file)."""
    ld = loader or _Loader(Path("<rules>"), "")
    ld.check_keys(doc, _TOP_KEYS, "")
    r = Rules(source=str(ld.path))
    if "trigger" in doc:
        r.trigger = ld.trigger(doc["trigger"], "trigger")
    r.remove = ld.patterns(doc.get("remove", []), "remove")
    r.add = ld.strings(doc.get("add", []), "add")
    r.keep = ld.patterns(doc.get("keep", []), "keep")
    replace = doc.get("replace", {})
    if not isinstance(replace, dict):
        ld.fail("replace", "expected a table: [replace] with `\"old tag\" = \"new tag\"` or a list of new tags")
    for old, new in replace.items():
        if isinstance(new, list) and not new:
            targets: list[str] = []  # `old = []` removes it
        else:
            targets = ld.strings(new, f"replace.{old}", ld.line_of("replace") or 0)
        if "*" in old or "?" in old or old.startswith("re:"):
            ld.fail(f"replace.{old}", "replace takes exact tags, not patterns (use remove + add)", old)
        r.replace[canonical(old)] = targets
        r.replace_text[canonical(old)] = old
    alias = doc.get("alias", {})
    if not isinstance(alias, dict):
        ld.fail("alias", "expected a table: [alias] with `\"preferred tag\" = [\"synonym\", ...]`")
    for preferred, others in alias.items():
        for other in ld.strings(others, f"alias.{preferred}", ld.line_of("alias") or 0):
            key = canonical(other)
            if key in r.alias and canonical(r.alias[key]) != canonical(preferred):
                ld.fail(f"alias.{preferred}", f"{other!r} is already an alias of {r.alias[key]!r}", preferred)
            r.alias[key] = preferred
    if "drop_character_traits" in doc:
        r.drop_character_traits = ld.boolean(doc["drop_character_traits"], "drop_character_traits")
    r.traits |= {canonical(t) for t in ld.strings(doc.get("extra_traits", []), "extra_traits")}
    r.traits -= {canonical(t) for t in ld.strings(doc.get("keep_traits", []), "keep_traits")}
    if "drop_implied" in doc:
        r.drop_implied = ld.boolean(doc["drop_implied"], "drop_implied")
    implied = doc.get("implied", {})
    if not isinstance(implied, dict):
        ld.fail("implied", "expected a table: [implied] with `\"specific tag\" = [\"general tag\", ...]`")
    for specific, general in implied.items():
        gens = ld.strings(general, f"implied.{specific}", ld.line_of("implied") or 0)
        r.implied.setdefault(canonical(specific), set()).update(canonical(g) for g in gens)
    r.characters = {canonical(t) for t in ld.strings(doc.get("characters", []), "characters")}
    r.count_tags += [canonical(t) for t in ld.strings(doc.get("count_tags", []), "count_tags")]
    if "dedupe" in doc:
        r.dedupe = ld.boolean(doc["dedupe"], "dedupe")
    if "order" in doc:
        r.order = ld.choice(doc["order"], "order", ORDERS)
    if "max_tags" in doc:
        v = doc["max_tags"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            ld.fail("max_tags", f"expected a whole number >= 0 (0 = no limit), got {v!r}")
        r.max_tags = v
    out = doc.get("output", {})
    if not isinstance(out, dict):
        ld.fail("output", "expected a table: [output]")
    after = ld.line_of("output") or 0
    ld.check_keys(out, _OUTPUT_KEYS, "output.", after)
    if "separator" in out:
        sep = out["separator"]
        # Readers (kohya, A1111, datakit itself) split captions at commas only: any other separator
        # would merge every caption into one tag.
        if not isinstance(sep, str) or sep.strip(" ") != ",":
            ld.fail("output.separator", f"expected a comma with optional spaces such as \", \" (kohya splits captions at "
                    f"commas; anything else merges the tags into one), got {sep!r}", after=after)
        r.output.separator = sep
    if "underscores" in out:
        r.output.underscores = ld.boolean(out["underscores"], "output.underscores")
    if "escape" in out:
        r.output.escape = ld.boolean(out["escape"], "output.escape")
    if "weights" in out:
        r.output.weights = ld.choice(out["weights"], "output.weights", WEIGHT_MODES)
    blocks = doc.get("rule", [])
    if not isinstance(blocks, list):
        ld.fail("rule", "expected [[rule]] blocks (an array of tables)")
    after = 0
    for i, block in enumerate(blocks, 1):
        after = (ld.line_of("rule", after) or after + 1)
        where = f"rule[{i}]"
        if not isinstance(block, dict):
            ld.fail(where, "expected a table", "rule")
        ld.check_keys(block, _RULE_KEYS, f"{where}.", after)
        cond = Conditional(name=ld.string(block["name"], f"{where}.name", after) if "name" in block else where)
        cond.when_folder = ld.strings(block.get("when_folder", []), f"{where}.when_folder", after)
        cond.when_stage = ld.strings(block.get("when_stage", []), f"{where}.when_stage", after)
        cond.when_concept = ld.strings(block.get("when_concept", []), f"{where}.when_concept", after)
        cond.if_tag = ld.patterns(block.get("if_tag", []), f"{where}.if_tag", after)
        cond.unless_tag = ld.patterns(block.get("unless_tag", []), f"{where}.unless_tag", after)
        cond.remove = ld.patterns(block.get("remove", []), f"{where}.remove", after)
        cond.add = ld.strings(block.get("add", []), f"{where}.add", after)
        if not cond.remove and not cond.add:
            ld.fail(where, "a [[rule]] needs `remove` or `add` (or both)", "rule", after - 1)
        r.rules.append(cond)
    return r
