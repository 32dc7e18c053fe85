"""CLIP token counts of captions against the 75-token window (77 minus the start/end tokens).

Exact with a CLIP tokenizer: a folder with vocab.json + merges.txt (or a diffusers model folder
with tokenizer/), a Hugging Face id found in the local cache, or `auto` (DATAKIT_CLIP_TOKENIZER,
then openai/clip-vit-large-patch14 if it is cached). Without one, an estimate that says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from datakit.errors import ModelNotFoundError

WINDOW = 75  # CLIP's 77 positions minus <|startoftext|> and <|endoftext|>
DEFAULT_HF_ID = "openai/clip-vit-large-patch14"
# CLIP's pre-tokeniser splits letters runs, single digits and punctuation runs (ftfy/regex version).
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_", re.IGNORECASE)


@dataclass
class TokenCounter:
    """Counts tokens of a caption; `exact` says whether it is a real CLIP tokenizer."""

    count: Callable[[str], int]
    exact: bool
    description: str


def estimate_tokens(text: str) -> int:
    """Approximate CLIP BPE tokens: one per piece, plus one per ~6 letters beyond the first 8."""
    n = 0
    for piece in _PIECES.findall(text.lower()):
        n += 1
        if len(piece) > 8 and piece[0].isalpha():
            n += (len(piece) - 8 + 5) // 6
    return n


def _from_folder(folder: Path):
    from transformers import CLIPTokenizer

    for cand in (folder, folder / "tokenizer"):
        # transformers 5's save_pretrained writes only tokenizer.json: a folder saved that way counts.
        bpe_files = (cand / "vocab.json").is_file() and (cand / "merges.txt").is_file()
        if bpe_files or (cand / "tokenizer.json").is_file():
            tok = CLIPTokenizer.from_pretrained(str(cand), local_files_only=True)
            if len(tok) < 256:  # a byte-level BPE has at least the 256 byte symbols
                raise ModelNotFoundError(f"--tokenizer {cand}: vocab.json has only {len(tok)} entries; not a CLIP tokenizer")
            return tok, cand
    missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
    raise ModelNotFoundError(
        f"--tokenizer {folder}: no CLIP tokenizer there (missing {', '.join(missing)}, or tokenizer.json; a diffusers "
        "model folder with tokenizer/ also works)"
    )


def _from_cache(model_id: str):
    """The tokenizer files of a Hugging Face id in the local cache (never downloads).

    The files are looked up first: transformers 5 quietly builds an empty 3-token tokenizer when
    `from_pretrained` finds none, which would count every caption wrong.
    """
    from huggingface_hub import try_to_load_from_cache

    found = {}
    for name in ("vocab.json", "merges.txt"):
        for sub in ("", "tokenizer/"):
            hit = try_to_load_from_cache(model_id, sub + name)
            if isinstance(hit, str):
                found[name] = Path(hit)
                break
    if len(found) < 2 or found["vocab.json"].parent != found["merges.txt"].parent:
        raise ModelNotFoundError(
            f"CLIP tokenizer {model_id!r} is not in the Hugging Face cache; download it once with "
            f"`hf download {model_id} vocab.json merges.txt tokenizer_config.json` or pass "
            f"--tokenizer DIR (a folder with vocab.json + merges.txt)"
        )
    return _from_folder(found["vocab.json"].parent)[0]


def _counter(tok: Any, where: str) -> TokenCounter:
    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

    return TokenCounter(count=count, exact=True, description=f"exact (CLIP tokenizer: {where})")


def _estimate() -> TokenCounter:
    return TokenCounter(
        count=estimate_tokens, exact=False,
        description="estimate (no CLIP tokenizer; pass --tokenizer DIR for exact counts)",
    )


def token_counter(spec: str | None = "auto") -> TokenCounter:
    """A counter for `spec`: a folder, a cached HF id, `auto` (exact if available) or `none` (estimate)."""
    if spec is None or spec == "none":
        return _estimate()
    if spec == "auto":
        env = os.environ.get("DATAKIT_CLIP_TOKENIZER")
        if env:
            return token_counter(env)
        try:
            return _counter(_from_cache(DEFAULT_HF_ID), f"{DEFAULT_HF_ID} from the Hugging Face cache")
        except ModelNotFoundError:
            return _estimate()
    path = Path(spec).expanduser()
    if path.exists():
        tok, where = _from_folder(path)
        return _counter(tok, str(where))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        return _counter(_from_cache(spec), f"{spec} from the Hugging Face cache")
    raise ModelNotFoundError(f"--tokenizer {spec}: no such folder (and not a Hugging Face id like {DEFAULT_HF_ID})")
