"""Hypernetwork prompts, the A1111 way (its latent sampling methods live in datakit.train.cache).

Prompts: a template file holds one prompt per line; each use picks a line at random and puts the
(shuffled, tag-dropped) caption in place of [filewords] and the hypernetwork's name in place of
[name]. Without a template the prompt is the caption itself.
"""

from __future__ import annotations

from pathlib import Path

from datakit.errors import UsageError

DEFAULT_TEMPLATE = "[filewords]"


def read_templates(path: Path | None) -> list[str]:
    """Template lines (blank lines skipped); ["[filewords]"] without a file."""
    if path is None:
        return [DEFAULT_TEMPLATE]
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise UsageError(f"--template {path}: the file has no prompt lines")
    return lines


def fill_template(template: str, caption: str, name: str) -> str:
    """A1111's substitution: [filewords] -> the caption, [name] -> the hypernetwork's name."""
    return template.replace("[filewords]", caption).replace("[name]", name)
