"""The models eval compares: adapter files (LoRA, hypernetwork), an in-memory training network, and the trigger word.

Every adapter is switched on and off around the samples it owns, so one loaded pipeline serves the
base model and every adapter in turn:

- LoRA files (kohya `.safetensors` as datakit and kohya write them, or a diffusers-format LoRA file
  or folder) are applied with diffusers' own `load_lora_weights` and removed with
  `unload_lora_weights` afterwards, which also takes peft's wrappers off the layers, so the base
  weights and modules are exactly as before (nothing is fused);
- A1111 hypernetwork `.pt` files are read with `weights_only=True` (datakit.train.hypernetwork)
  and hooked into the UNet's attention (datakit.train.hypernetwork), then unhooked;
- `NetworkAdapter` wraps a network the trainer already applied (LoRANetwork or Hypernetwork):
  it sets the network's strength for its samples and to 0 (exactly the base model) for the reference.

The trigger word comes from the file (LoRA: `modelspec.trigger_phrase`, datakit's
`ss_training_comment` "trigger: X", or the one tag present in every training caption according to
kohya's `ss_tag_frequency`; hypernetwork: "trigger: X" in `optional_info`), or from --trigger.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

from datakit.errors import UsageError
from datakit.evaluate.messages import first_line

LORA_SUFFIXES = (".safetensors",)
HYPERNETWORK_SUFFIXES = (".pt", ".pth", ".ckpt")
DIFFUSERS_LORA_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
_TRIGGER_NOTE = re.compile(r"trigger:\s*([^;\n]+)")


class Adapter(Protocol):
    """Something eval can switch on for its samples and off for the base reference."""

    label: str
    kind: str  # "lora" | "hypernetwork" | "network"
    trigger: str | None

    def applied(self, pipe) -> contextlib.AbstractContextManager:
        """A context in which the pipeline draws with this adapter."""

    def removed(self, pipe) -> contextlib.AbstractContextManager:
        """A context in which this adapter has no effect (the base model's reference samples)."""


@dataclass
class LoraFile:
    """A LoRA file or diffusers LoRA folder, applied with diffusers' loader."""

    path: Path
    label: str
    trigger: str | None
    strength: float = 1.0
    metadata: dict = field(default_factory=dict)
    kind: str = "lora"

    @contextlib.contextmanager
    def applied(self, pipe) -> Iterator[None]:
        slot = "datakit_eval"
        kwargs = {}
        source = self.path
        if self.path.is_dir():
            source, kwargs = self.path, {"weight_name": diffusers_weight_name(self.path)}
        try:
            pipe.load_lora_weights(str(source), adapter_name=slot, **kwargs)
        except Exception as exc:  # diffusers raises ValueError/KeyError/RuntimeError for keys it cannot place
            with contextlib.suppress(Exception):
                pipe.unload_lora_weights()
            raise UsageError(f"{self.path.name}: diffusers cannot apply this LoRA to the base model "
                             f"({first_line(exc)}); is it for another model family (SD1/SD2/SDXL)?") from None
        try:
            pipe.set_adapters([slot], adapter_weights=[self.strength])
            yield
        finally:
            pipe.unload_lora_weights()

    @contextlib.contextmanager
    def removed(self, pipe) -> Iterator[None]:
        yield  # only ever loaded inside applied()


@dataclass
class HypernetworkFile:
    """An A1111 hypernetwork .pt, hooked into the UNet's attention while applied."""

    path: Path
    label: str
    trigger: str | None
    network: Any
    strength: float = 1.0
    metadata: dict = field(default_factory=dict)
    kind: str = "hypernetwork"

    @contextlib.contextmanager
    def applied(self, pipe) -> Iterator[None]:
        net = self.network
        net.to(pipe.unet.device)
        net.eval()  # no dropout at inference, as A1111
        net.set_multiplier(self.strength)
        net.apply_to(pipe.unet)
        try:
            cross = int(pipe.unet.config.cross_attention_dim)
            if cross not in net.hooked:
                raise UsageError(f"{self.path.name}: the hypernetwork has no module for this model's text width "
                                 f"{cross} (it has {sorted(net.sizes)}): it was made for another model family")
            yield
        finally:
            net.remove()

    @contextlib.contextmanager
    def removed(self, pipe) -> Iterator[None]:
        yield


@dataclass
class NetworkAdapter:
    """A network the trainer has already applied (LoRANetwork, Hypernetwork): switched by its multiplier.

    Afterwards the multiplier is `restore` (1.0, what training uses) and the train/eval mode is
    what it was before.
    """

    network: Any
    label: str
    trigger: str | None
    strength: float = 1.0
    restore: float = 1.0
    kind: str = "network"

    @contextlib.contextmanager
    def _at(self, value: float) -> Iterator[None]:
        was_training = self.network.training
        self.network.eval()
        self.network.set_multiplier(value)
        try:
            yield
        finally:
            self.network.set_multiplier(self.restore)
            self.network.train(was_training)

    def applied(self, pipe):
        return self._at(self.strength)

    def removed(self, pipe):
        return self._at(0.0)


# ---- opening files -------------------------------------------------------------------------------


def diffusers_weight_name(folder: Path) -> str:
    """The weights file of a diffusers-format LoRA folder."""
    for name in DIFFUSERS_LORA_FILES:
        if (folder / name).is_file():
            return name
    raise UsageError(f"--adapter {folder} is a folder without {' or '.join(DIFFUSERS_LORA_FILES)} "
                     "(give a LoRA .safetensors file, a hypernetwork .pt, or a diffusers LoRA folder)")


def open_adapter(path: Path, label: str, *, trigger: str | None = None, lora_strength: float = 1.0,
                 hypernetwork_strength: float = 1.0) -> LoraFile | HypernetworkFile:
    """Check an adapter file and read its metadata (nothing is applied yet); UsageError for anything unusable."""
    from datakit.captions import check_trigger

    path = Path(path)
    if not path.exists():
        raise UsageError(f"--adapter {path}: no such file")
    if path.is_dir():
        weights = path / diffusers_weight_name(path)
        meta = read_safetensors_metadata(weights)
        return LoraFile(path, label, trigger or metadata_trigger(meta, weights), lora_strength, meta)
    if path.stat().st_size == 0:
        raise UsageError(f"--adapter {path}: the file is empty (an interrupted copy?)")
    suffix = path.suffix.lower()
    if suffix in LORA_SUFFIXES:
        meta = read_safetensors_metadata(path)
        return LoraFile(path, label, trigger or metadata_trigger(meta, path), lora_strength, meta)
    if suffix in HYPERNETWORK_SUFFIXES:
        from datakit.train.hypernetwork import read_hypernetwork_file

        data = read_hypernetwork_file(path, what=f"--adapter {path.name}")
        note = str(data["meta"].get("optional_info") or "")
        found = _TRIGGER_NOTE.search(note)
        file_trigger = check_trigger(found.group(1), source=f"{path.name} optional_info") if found else None
        return HypernetworkFile(path, label, trigger or file_trigger, data["network"], hypernetwork_strength,
                                {k: v for k, v in data["meta"].items() if isinstance(v, (str, int, float, bool, list))})
    raise UsageError(f"--adapter {path.name}: not an adapter file (a LoRA .safetensors, a diffusers LoRA folder, "
                     "or an A1111 hypernetwork .pt)")


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a LoRA .safetensors; UsageError when it is not a LoRA at all."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            keys = list(fh.keys())
    except Exception as exc:  # safetensors raises SafetensorError/OSError for damaged or foreign files
        raise UsageError(f"--adapter {path.name}: cannot read it as a .safetensors file ({first_line(exc)})") from None
    if not keys:
        raise UsageError(f"--adapter {path.name}: the file holds no tensors")
    if any(k.startswith(("model.diffusion_model.", "conditioner.", "cond_stage_model.")) for k in keys):
        raise UsageError(f"--adapter {path.name} is a full Stable Diffusion checkpoint, not a LoRA "
                         "(give it as --base-model)")
    if not any("lora" in k or k.endswith(".alpha") or "hada_" in k or "lokr_" in k for k in keys):
        raise UsageError(f"--adapter {path.name}: no LoRA tensors in it (e.g. {keys[0]})")
    return meta


def metadata_trigger(meta: dict[str, str], path: Path) -> str | None:
    """The trigger word a LoRA file names, checked as one tag; None when it names none (or several)."""
    from datakit.captions import check_trigger

    for key in ("modelspec.trigger_phrase", "ss_training_comment"):
        value = meta.get(key)
        if not value:
            continue
        if key == "ss_training_comment":
            found = _TRIGGER_NOTE.search(value)
            if not found:
                continue
            value = found.group(1)
        return check_trigger(value.split(",")[0], source=f"{path.name} {key}")
    tag = common_tag(meta)
    return check_trigger(tag, source=f"{path.name} ss_tag_frequency") if tag else None


def common_tag(meta: dict[str, str]) -> str | None:
    """kohya's metadata: the one tag found in every training caption (the trigger), or None if not exactly one.

    `ss_tag_frequency` counts each tag's captions per dataset folder; `ss_dataset_dirs` gives each
    folder's image count. A tag in every caption of every folder is what a trigger word is; two such
    tags (`sks, 1girl` everywhere) are ambiguous, and then --trigger has to say which.
    """
    try:
        freq = json.loads(meta.get("ss_tag_frequency") or "{}")
        dirs = json.loads(meta.get("ss_dataset_dirs") or "{}")
    except json.JSONDecodeError:
        return None
    if not isinstance(freq, dict) or not isinstance(dirs, dict) or not freq:
        return None
    everywhere: set[str] | None = None
    for folder, tags in freq.items():
        count = (dirs.get(folder) or {}).get("img_count") if isinstance(dirs.get(folder), dict) else None
        if not isinstance(tags, dict) or not isinstance(count, int) or count < 1:
            return None
        full = {t.strip() for t, n in tags.items() if isinstance(n, int) and n >= count and t.strip()}
        everywhere = full if everywhere is None else everywhere & full
    return next(iter(everywhere)) if everywhere and len(everywhere) == 1 else None

