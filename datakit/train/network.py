"""The pluggable-network protocol: what the training loop needs from a LoRA, a hypernetwork, ...

The loop never looks inside a network. It calls these methods, in this order:

    net = make_network(cfg, base)            # a torch.nn.Module holding only the trainable weights
    net.apply_to(base)                       # hook into base.unet / base.text_encoders (no copies)
    net.load(path)                           # optional: --network-weights / resume an existing file
    groups = net.param_groups(unet_lr, te_lr)  # optimizer parameter groups (fp32 tensors)
    ... forward passes through base.unet / text encoders now include the network ...
    net.save(path, metadata, dtype)          # the user-facing file (kohya .safetensors, A1111 .pt, ...)
    net.state_dict() / net.load_state_dict() # full-precision checkpoints (torch's own methods)

`trains_text_encoder` tells the loop whether text-encoder outputs can be cached.
`file_suffix` is the extension of the file `save` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Network(Protocol):
    """A trainable add-on to a frozen base model."""

    trains_text_encoder: bool
    file_suffix: str

    def apply_to(self, base) -> None:
        """Insert the network into the base model's UNet (and text encoders when it trains them)."""

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """Optimizer parameter groups: each a dict with `params` and `lr`."""

    def save(self, path: Path, metadata: dict[str, str], dtype) -> None:
        """Write the user-facing weights file (atomically) with its metadata."""

    def load(self, path: Path) -> dict:
        """Load weights from a file this network can read; returns its metadata."""

    def set_multiplier(self, value: float) -> None:
        """Strength applied at inference (samples); 1.0 while training."""
