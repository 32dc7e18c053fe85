"""Per-item seeds derived from (seed, the item's key), independent of worker count and order."""

from __future__ import annotations

import hashlib

import numpy as np


def item_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the run seed and an item key (e.g. its relative path)."""
    digest = hashlib.blake2b(f"{int(seed)}\0{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def item_rng(seed: int, key: str) -> np.random.Generator:
    """A NumPy generator private to one item."""
    return np.random.default_rng(item_seed(seed, key))
