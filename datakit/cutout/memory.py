"""Keep freed buffers in the process from one image to the next (glibc's malloc only).

A cut-out allocates and frees some 40 MB of image-sized buffers per 1024 px image. glibc adapts its
malloc thresholds as a program runs, and depending on the order of earlier allocations it either
keeps those buffers for the next image or hands them back to the OS and maps them in again, zero
filled, a page at a time: measured, 10 ms of kernel time per image, a third of the cut's own time.
Fixed thresholds make the first behaviour certain. Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Buffers below this come from the reusable heap (32 MB: the largest value every glibc accepts).
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of the heap beyond this goes back to the OS (a few images' worth).
TRIM_THRESHOLD = 128 << 20

_state: dict[str, bool] = {}


def keep_freed_buffers() -> bool:
    """Set fixed malloc thresholds for this process, once; True when glibc took them."""
    if "done" in _state:
        return _state["done"]
    _state["done"] = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Both or neither: setting one alone switches glibc's adaptation off and leaves the other at
    # its small default, which is slower than not setting any.
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
        _state["done"] = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return _state["done"]
