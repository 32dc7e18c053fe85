"""Trainers for Stable Diffusion adapters: LoRA (kohya format) and, on the same loop, other networks.

Modules, top to bottom: config (TrainConfig), data (datasets, buckets, caches), model (base model
loading), network (the pluggable-network protocol), lora (LoRA modules and kohya names), formats
(safetensors writing, metadata), optim (optimizers, schedulers), trainer (the loop), samples.
"""
