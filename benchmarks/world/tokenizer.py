"""The world's CLIP tokenizer: byte-level BPE learnt from the world's own words, in CLIP's file format.

CLIP's BPE works on words whose last symbol carries `</w>`, over the GPT-2 byte alphabet (every
byte has a printable stand-in, so any text tokenizes: an unseen trigger word falls apart into known
pieces instead of an unknown token). The vocabulary holds the whole alphabet (transformers 5 loads
a tokenizer without it as a 2-3 token one), the learnt merges, then `<|startoftext|>` and
`<|endoftext|>`, in the order CLIP's own vocab.json has them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def byte_alphabet() -> list[str]:
    """The 256 symbols of the GPT-2/CLIP byte alphabet, in CLIP's vocab order (printable bytes first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def learn_merges(word_counts: dict[str, int], max_merges: int = 2000) -> list[tuple[str, str]]:
    """Classic BPE: repeatedly merge the most frequent adjacent pair (ties: the pair that sorts first)."""
    words = {tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in word_counts.items() if w}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: Counter = Counter()
        for symbols, count in words.items():
            for a, b in zip(symbols, symbols[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break  # every word is one symbol
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for symbols, count in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges


def write_tokenizer(folder: Path, word_counts: dict[str, int]) -> Path:
    """vocab.json + merges.txt + tokenizer_config.json for a CLIPTokenizer, learnt from word_counts."""
    folder.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(word_counts)
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                       encoding="utf-8")
    # Without model_max_length the tokenizer would not pad/truncate prompts to CLIP's 77 positions.
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}), encoding="utf-8")
    return folder
