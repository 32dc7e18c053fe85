"""datakit: dataset preparation and augmentation for Stable Diffusion adapters."""

__version__ = "0.1.0"
