"""Built-in declarations. Models state what they are; they never import engines."""
from probgen.models.mixture import GaussianMixture  # noqa: F401
