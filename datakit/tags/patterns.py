"""User patterns (`re:` regexes and `*`/`?` globs) compiled for RE2, a linear-time regex engine.

Python's `re` backtracks: a rules entry like `re:(a+)+$` takes seconds on a 30-character tag and
minutes on 40. RE2 (google-re2) matches in time linear in the tag's length for every pattern, at the
price of a smaller language: no lookaround, no backreferences, no possessive quantifiers or atomic
groups. A pattern using them is a clear usage error naming it (docs/tags.md lists the subset).
"""

from __future__ import annotations

import re

import re2

from datakit.errors import UsageError

# Characters with a meaning in RE2 syntax; everything else in a glob is literal as it is.
_SPECIAL = set("\\.+*?()|[]{}^$")


def _options(case_sensitive: bool):
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # RE2 would print its own line on stderr for every bad pattern
    return options


_INSENSITIVE = _options(False)
_SENSITIVE = _options(True)
UNSUPPORTED_HINT = "lookahead/lookbehind (?=...) (?!...) (?<=...), backreferences \\1, atomic groups and possessive quantifiers"


class PatternError(UsageError):
    """A user pattern RE2 cannot compile (with a message that says why)."""


def compile_regex(text: str, *, ignore_case: bool = True):
    """Compile a user regex with RE2; PatternError says whether the syntax is wrong or merely unsupported."""
    try:
        return re2.compile(text, _INSENSITIVE if ignore_case else _SENSITIVE)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        try:
            re.compile(text)  # compiling (not matching) with Python's engine only tells the two errors apart
        except (re.error, RecursionError, OverflowError):
            raise PatternError(f"bad regular expression {text!r}: {why}") from None
        raise PatternError(
            f"regular expression {text!r} uses syntax the linear-time engine (RE2) does not support ({why}). "
            f"Not available: {UNSUPPORTED_HINT}; see docs/tags.md"
        ) from None


def glob_to_regex(glob: str) -> str:
    """`*` -> any run of characters, `?` -> one character, everything else literal (brackets too)."""
    return "".join(".*" if c == "*" else "." if c == "?" else "\\" + c if c in _SPECIAL else c for c in glob)


def compile_glob(glob: str, *, ignore_case: bool = True):
    """A glob compiled for RE2 full matches."""
    return compile_regex(glob_to_regex(glob), ignore_case=ignore_case)


def is_linear(compiled) -> bool:
    """True when `compiled` runs in the linear-time engine (what every user pattern must use)."""
    return type(compiled).__module__.split(".")[0] == "re2"
