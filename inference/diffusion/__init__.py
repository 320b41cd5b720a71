"""The `diffusion` engine: forward noising chain, learned reverse chain."""
from probgen.inference.diffusion import ddpm  # noqa: F401
