"""One line of an exception for an `error:` message (libraries put tracebacks and advice on later lines)."""

from __future__ import annotations


def first_line(exc: BaseException | None, limit: int = 300) -> str:
    """The first line of an exception's text, without the trailing full stop; its type when it has no text."""
    lines = str(exc).strip().splitlines() if exc is not None else []
    return lines[0].rstrip(". ")[:limit] if lines else type(exc).__name__
