"""Apply a trained adapter file to a loaded diffusers pipeline for inference (samples, `datakit eval`).

    handle = apply_adapter(pipe, "out/sks.safetensors", strength=0.8)   # or an A1111 hypernetwork .pt
    images = pipe("sks, on a beach").images
    handle.set_strength(1.0)
    handle.remove()                                                     # the pipeline as it was

Files: a kohya-format LoRA as `datakit train` writes it (one rank for all linear modules, optionally
a conv rank and text-encoder modules: all read from the file); a diffusers-layout LoRA
(`--format diffusers`, loaded by diffusers' own `load_lora_weights`); an A1111 hypernetwork `.pt`
(opened with weights_only, never unpickling code). The adapter runs on the UNet's device and dtype.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from datakit.errors import UsageError


class AppliedAdapter:
    """An adapter hooked into a pipeline: set_strength(x), remove()."""

    def __init__(self, kind: str, path: Path, network=None, pipeline=None, adapter_name: str | None = None):
        self.kind, self.path = kind, path
        self._network, self._pipeline, self._adapter_name = network, pipeline, adapter_name

    def set_strength(self, value: float) -> None:
        """The multiplier of the adapter's effect (1: as trained)."""
        if self._network is not None:
            self._network.set_multiplier(float(value))
        else:
            self._pipeline.set_adapters([self._adapter_name], [float(value)])

    def remove(self) -> None:
        """Unhook the adapter: the pipeline computes as before it was applied."""
        if self._network is not None:
            self._network.remove()
        else:
            self._pipeline.delete_adapters([self._adapter_name])


def apply_adapter(pipeline, path, *, strength: float = 1.0) -> AppliedAdapter:
    """Hook a LoRA (.safetensors) or A1111 hypernetwork (.pt) file into the pipeline's UNet (and text encoders)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"adapter file not found: {path}")
    if path.suffix == ".pt":
        return _hypernetwork(pipeline, path, strength)
    if path.suffix != ".safetensors":
        raise UsageError(f"{path.name}: an adapter is a LoRA .safetensors or an A1111 hypernetwork .pt")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    if any(k.startswith(("unet.", "text_encoder")) for k in keys):
        name = f"datakit_{path.stem}"
        pipeline.load_lora_weights(str(path), adapter_name=name)
        applied = AppliedAdapter("lora-diffusers", path, pipeline=pipeline, adapter_name=name)
        applied.set_strength(strength)
        return applied
    return _kohya_lora(pipeline, path, keys, strength)


def _base(pipeline):
    from datakit.models.diffusion import detect_family

    tes = [te for te in (getattr(pipeline, "text_encoder", None), getattr(pipeline, "text_encoder_2", None)) if te is not None]
    return SimpleNamespace(unet=pipeline.unet, text_encoders=tes, family=detect_family(pipeline))


def _kohya_lora(pipeline, path: Path, keys: list[str], strength: float) -> AppliedAdapter:
    from safetensors import safe_open

    from datakit.train.lora import LoRANetwork

    downs = {}
    with safe_open(str(path), framework="pt") as f:
        for k in keys:
            if k.endswith(".lora_down.weight"):
                downs[k] = f.get_slice(k).get_shape()
    if not downs:
        raise UsageError(f"{path.name} holds no kohya LoRA modules (no *.lora_down.weight tensors)")
    linear = {s[0] for s in downs.values() if len(s) == 2 or tuple(s[2:]) == (1, 1)}
    conv = {s[0] for s in downs.values() if len(s) == 4 and tuple(s[2:]) != (1, 1)}
    if len(linear) > 1 or len(conv) > 1:
        raise UsageError(f"{path.name} has modules of several ranks; load it with diffusers' load_lora_weights instead")
    base = _base(pipeline)
    network = LoRANetwork(rank=next(iter(linear), next(iter(conv), 1)), conv_rank=next(iter(conv), None),
                          train_text_encoder=any(k.startswith("lora_te") for k in keys))
    network.apply_to(base)
    network.load(path)  # names and shapes must match exactly; alpha comes from the file
    return _finish(network, base.unet, path, "lora", strength)


def _hypernetwork(pipeline, path: Path, strength: float) -> AppliedAdapter:
    from datakit.train.hypernetwork import read_hypernetwork_file

    network = read_hypernetwork_file(path, what="adapter")["network"]
    network.apply_to(pipeline.unet)
    if not network.hooked:
        raise UsageError(f"{path.name}: none of its sizes {network.sizes} matches an attention width of this model")
    return _finish(network, pipeline.unet, path, "hypernetwork", strength)


def _finish(network, unet, path: Path, kind: str, strength: float) -> AppliedAdapter:
    param = next(unet.parameters())
    # LoRA runs in the UNet's dtype; a hypernetwork computes in fp32 itself (as A1111) and casts back.
    if kind == "lora":
        network.to(param.device, param.dtype)
    else:
        network.to(param.device)
    network.eval()
    applied = AppliedAdapter(kind, path, network=network)
    applied.set_strength(strength)
    return applied
