"""Folder-safe concept names: no path traversal, no separators, stable and readable."""

from __future__ import annotations

import re
import unicodedata

from datakit.errors import UsageError
from datakit.paths import check_name

MAX_NAME = 64
# Word characters (any script), dot and dash survive; everything else becomes `_`.
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


def sanitize_name(raw: str) -> str:
    """A name usable as `<repeats>_<name>/`: same input, same output; raise UsageError when nothing is left."""
    text = unicodedata.normalize("NFKC", raw).strip()
    text = _UNSAFE.sub("_", text)
    text = re.sub(r"_+", "_", text)
    # Leading dots would hide the folder or make `..`; leading/trailing `_`/`-` only add noise.
    text = text.strip("._-")
    text = text[:MAX_NAME].rstrip("._-")
    if not text:
        raise UsageError(f"concept name {raw!r} has no usable characters (use letters, digits, '_', '-' or '.')")
    # The boundary check every name that becomes a path passes (the name is only used as `<repeats>_<name>`).
    check_name(f"1_{text}", "concept name", source=repr(raw))
    return text


def split_assignment(value: str, option: str) -> tuple[str, str]:
    """'NAME=VALUE' split at the first '=' (a value may itself contain '=')."""
    name, sep, rest = value.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise UsageError(f"{option} expects NAME=VALUE, got {value!r}")
    return name.strip(), rest.strip()
