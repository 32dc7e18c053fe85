"""The base model on PyTorch's meta device: its configs, parameter counts, FLOPs and saved activations, no weights.

The configs the real loader would use are read (a diffusers folder's `unet/config.json` etc.; for a
single checkpoint the shipped `datakit/models/configs/<family>/` after detecting the family from the
safetensors header; a Hugging Face id from the local cache), the UNet, VAE and text encoder(s) are
built on the meta device, and one forward pass of the UNet on meta tensors at the plan's resolution
and batch size counts the floating-point operations (torch's FlopCounterMode) and the activations
autograd keeps for the backward pass (every tensor it saves, seen through saved_tensors_hooks;
attention as the memory-efficient SDPA kernels keep it, without the N x N matrix), plus what each
checkpointed block (ResnetBlock2D, BasicTransformerBlock) holds. Used by datakit.train.estimate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# The blocks diffusers' gradient checkpointing recomputes one at a time.
CHECKPOINT_UNITS = ("ResnetBlock2D", "BasicTransformerBlock")


@dataclass
class ModelConfigs:
    """Where a base model's component configs are, and its family."""

    family: str
    folder: Path  # diffusers layout: unet/config.json, vae/config.json, text_encoder/config.json ...
    source: str  # said to the user: which configs were read
    notes: list[str] = field(default_factory=list)


# ---- finding the configs the loader would use ----------------------------------------------------

def locate_configs(model: str, *, family: str | None = None, config_dir: Path | None = None) -> ModelConfigs:
    """The config folder for a diffusers folder, a single checkpoint or a cached Hugging Face id."""
    from datakit.errors import ModelNotFoundError
    from datakit.models import diffusion as dm

    path = Path(str(model)).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"{path} has no model_index.json")
        return ModelConfigs(family or dm.family_of_folder(path), path, f"configs of {path}")
    if path.is_file():
        notes = []
        if family is None and path.suffix.lower() == ".safetensors":
            family = dm.family_of_checkpoint(dm.checkpoint_keys(path))  # the header only, no tensors
        elif family is None:
            # A pickled .ckpt would have to be unpickled to see its keys: too slow for a dry run.
            family = "sdxl" if "xl" in path.name.lower() else "sd1"
            notes.append(f"family {family} guessed from the file name (give --family to be sure)")
        folder = dm.configs_for(family, Path(config_dir) if config_dir else None)
        return ModelConfigs(family, folder, f"{family} configs in {folder}", notes)
    if dm.looks_like_hub_id(str(model)):
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(str(model), "model_index.json")
        if isinstance(hit, str):
            folder = Path(hit).parent
            return ModelConfigs(family or dm.family_of_folder(folder), folder, f"configs of {model} (Hugging Face cache)")
        raise ModelNotFoundError(f"{model} is not in the Hugging Face cache")
    raise ModelNotFoundError(f"model not found: {model}")


# ---- the model on the meta device ---------------------------------------------------------------

@dataclass
class MetaModel:
    """The base model's modules on the meta device: shapes and structure, no weights."""

    family: str
    unet: object
    vae: object | None
    text_encoders: list


def _component_config(folder: Path, name: str, family: str) -> Path:
    own = folder / name / "config.json"
    if own.is_file():
        return own
    from datakit.models.diffusion import CONFIG_ROOT

    return CONFIG_ROOT / family / name / "config.json"


def build_meta_model(configs: ModelConfigs) -> MetaModel:
    """UNet, VAE and text encoder(s) from their configs, every parameter on the meta device."""
    import transformers
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from datakit.models.diffusion import quiet_loading

    quiet_loading()
    fam, folder = configs.family, configs.folder
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(_component_config(folder, "unet", fam).parent)))
        vae_cfg = _component_config(folder, "vae", fam)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(vae_cfg.parent))) if vae_cfg.is_file() else None
        encoders = []
        names = ("text_encoder", "text_encoder_2") if fam == "sdxl" else ("text_encoder",)
        for i, name in enumerate(names):
            cfg_file = _component_config(folder, name, fam)
            if not cfg_file.is_file():
                continue
            default = "CLIPTextModelWithProjection" if i == 1 else "CLIPTextModel"
            cls_name = (index.get(name) or [None, default])[1] or default
            cls = getattr(transformers, cls_name, None) or getattr(transformers, default)
            te_cfg = transformers.CLIPTextConfig.from_pretrained(str(cfg_file.parent))
            encoders.append(cls(te_cfg))
    return MetaModel(fam, unet, vae, encoders)


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


# ---- what the run trains ------------------------------------------------------------------------

def lora_params(meta: MetaModel, cfg) -> int:
    """Parameters of the LoRA the trainer would build (the same target modules, kohya's shapes)."""
    from torch import nn

    from datakit.train.lora import text_encoder_prefixes, text_encoder_targets, unet_targets

    def size(mod, rank: int) -> int:
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            return rank * (mod.in_channels * k + mod.out_channels)
        return rank * (mod.in_features + mod.out_features)

    lora = cfg.lora
    total = 0
    for _, mod, is_3x3 in unet_targets(meta.unet, sdxl=meta.family == "sdxl", conv=bool(lora.conv_rank)):
        total += size(mod, lora.conv_rank if is_3x3 else lora.rank)
    if lora.train_text_encoder:
        for prefix, enc in zip(text_encoder_prefixes(len(meta.text_encoders)), meta.text_encoders):
            total += sum(size(mod, lora.rank) for _, mod, _ in text_encoder_targets(enc, prefix))
    return total


def trains_text_encoder(cfg) -> bool:
    """The run trains text-encoder modules (LoRA with --train-text-encoder)."""
    return cfg.lora is not None and cfg.lora.train_text_encoder


def hypernetwork_params(meta: MetaModel, cfg) -> int:
    """Parameters of the hypernetwork the trainer would build (its sizes and layer structure)."""
    from accelerate import init_empty_weights

    from datakit.train.hypernetwork import Hypernetwork, sizes_for
    from datakit.train.hypernetwork_config import hypernetwork_settings

    hs = hypernetwork_settings(cfg)
    sizes = hs.sizes or sizes_for(meta.unet, meta.family)
    with init_empty_weights():
        net = Hypernetwork(sizes, hs.layer_structure, hs.activation, layer_norm=hs.layer_norm,
                           dropout_structure=hs.dropout_structure, activate_output=hs.activate_output, init=False)
    return count_params(net)


def trainable_params(meta: MetaModel, cfg) -> int:
    return hypernetwork_params(meta, cfg) if cfg.method == "hypernetwork" else lora_params(meta, cfg)


# ---- one forward pass on meta tensors ------------------------------------------------------------

@dataclass
class Profile:
    """What one UNet forward at the plan's size costs."""

    forward_flops: int
    saved_bytes: int  # activation peak without checkpointing: everything saved + one block's gradients
    checkpointed_bytes: int  # with gradient checkpointing: block inputs + the largest block recomputed + its gradients


def profile_unet(meta: MetaModel, *, batch: int, resolution: tuple[int, int], dtype, tokens: int = 77) -> Profile:
    """FLOPs and saved activations of a UNet forward that needs input gradients (LoRA/hypernetwork training)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = meta.unet.requires_grad_(False).to(dtype)
    ucfg = unet.config
    down = 2 ** (len(meta.vae.config.block_out_channels) - 1) if meta.vae is not None else 8
    w, h = resolution
    lw, lh = max(1, w // down), max(1, h // down)

    def empty(*shape):
        return torch.empty(*shape, device="meta", dtype=dtype)

    latents = empty(batch, int(ucfg.in_channels), lh, lw).requires_grad_(True)
    context = empty(batch, tokens, int(ucfg.cross_attention_dim))
    kwargs = {}
    if ucfg.addition_embed_type == "text_time":
        pooled = int(ucfg.projection_class_embeddings_input_dim) - 6 * int(ucfg.addition_time_embed_dim)
        kwargs["added_cond_kwargs"] = {"text_embeds": empty(batch, pooled), "time_ids": empty(batch, 6)}

    frozen = {id(p) for p in unet.parameters()}
    saved: dict[int, tuple[object, int]] = {}  # keeps each base tensor alive, so ids stay unique
    total = [0]

    def pack(t):
        base = t._base if t._base is not None else t
        if id(base) not in frozen and id(base) not in saved:
            nbytes = base.numel() * base.element_size()
            saved[id(base)] = (base, nbytes)
            total[0] += nbytes
        return t

    units: list[tuple[int, int]] = []  # (input bytes, saved bytes) of each outermost checkpointed block
    open_units: list[tuple[int, int]] = []  # (saved total at entry, input bytes), innermost last

    def pre(mod, args):
        x = args[0] if args else None
        open_units.append((total[0], x.numel() * x.element_size() if torch.is_tensor(x) else 0))

    def post(mod, args, out):
        start, in_bytes = open_units.pop()
        if not open_units:  # nested blocks are part of their outer block
            units.append((in_bytes, total[0] - start))

    handles = []
    for mod in unet.modules():
        if type(mod).__name__ in CHECKPOINT_UNITS:
            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    counter = FlopCounterMode(display=False)
    functional = torch.nn.functional
    plain_sdpa = functional.scaled_dot_product_attention
    functional.scaled_dot_product_attention = _memory_efficient_sdpa(plain_sdpa)
    try:
        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            unet(latents, torch.zeros(batch, device="meta", dtype=torch.long), context, **kwargs)
    finally:
        functional.scaled_dot_product_attention = plain_sdpa
        for handle in handles:
            handle.remove()
    # Backward holds, next to what was saved, the gradients flowing through the block it is in: about
    # one block's saved size. With checkpointing that block is also recomputed first: twice that.
    largest = max((s for _, s in units), default=0)
    checkpointed = total[0] - sum(s for _, s in units) + sum(i for i, _ in units) + 2 * largest
    return Profile(int(counter.get_total_flops()), total[0] + largest, checkpointed)


def _memory_efficient_sdpa(plain):
    """SDPA as the GPU (and the CPU's flash kernel) runs it: no attention matrix kept for backward.

    On meta tensors torch picks the reference "math" path, which saves the full (heads, N, N)
    probabilities in fp32; counting those would overstate activations several times at 512 px.
    A call with a mask or other extras goes to the plain function.
    """
    import torch

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **extra):
        if attn_mask is not None or extra:
            return plain(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                         scale=scale, **extra)
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, None, True, dropout_p, is_causal, scale=scale)[0]

    return sdpa


def text_encoder_flops(meta: MetaModel, *, batch: int, tokens: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for enc in meta.text_encoders:
            enc(torch.zeros(batch, tokens, dtype=torch.long, device="meta"))
    return int(counter.get_total_flops())
