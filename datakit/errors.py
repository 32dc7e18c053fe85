"""Named exceptions; the CLI maps each to an `error: ...` line and an exit code."""

from __future__ import annotations

# Exit codes (documented in the README; keep them stable, scripts depend on them).
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: unexpected exception
EXIT_USAGE = 2  # bad flags, bad paths, bad config files
EXIT_PARTIAL = 3  # the stage completed but some inputs were skipped or failed
EXIT_MISSING = 4  # a named model or an optional package is missing
EXIT_RUNTIME = 5  # the work itself failed (all items failed, training diverged, out of memory)
EXIT_INTERRUPTED = 130


class DatakitError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = EXIT_RUNTIME


class UsageError(DatakitError):
    """Bad options, paths or configuration given by the user."""

    exit_code = EXIT_USAGE


class ModelNotFoundError(DatakitError):
    """A named model (weights, config, tokenizer) cannot be found."""

    exit_code = EXIT_MISSING


class DependencyError(DatakitError):
    """An optional Python package needed by the chosen path is not installed."""

    exit_code = EXIT_MISSING


class StageError(DatakitError):
    """The stage ran but could not produce its result."""

    exit_code = EXIT_RUNTIME


class ImageError(DatakitError):
    """One input image cannot be used; the stage skips it and names it."""

    exit_code = EXIT_PARTIAL
    reason = "unreadable image"


class ZeroByteImage(ImageError):
    """The file is empty."""

    reason = "zero-byte file"


class TruncatedImage(ImageError):
    """The image data ends early."""

    reason = "truncated image"


class NotAnImage(ImageError):
    """The file is not an image format Pillow can read."""

    reason = "not an image"


class ImageTooLarge(ImageError):
    """Pixel count above the limit (decompression-bomb guard)."""

    reason = "image too large"


def require(module: str, purpose: str, extra: str | None = None):
    """Import an optional module or raise DependencyError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = f"pip install 'datakit[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise DependencyError(f"{purpose} needs the Python package '{module}' ({exc}); install it with: {hint}") from exc
