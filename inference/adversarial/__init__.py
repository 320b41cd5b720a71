"""The `adversarial` engine: min-max training of an implicit sampler."""
from probgen.inference.adversarial import gan  # noqa: F401
